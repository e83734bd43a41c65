"""`kiln init DIR`: a workspace a user starts from, ready for `dvc repro`.

Git and DVC initialised, a local DVC remote configured in the first commit (so
`dvc artifacts get --rev <tag>` works from any clone later), `.dvcignore`, an example
spec using a custom model from a plugin module, the generated dvc.yaml, the JSON Schema
for editors, and a README with the next steps.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from torchkiln.errors import RunError, UsageError

SPEC = """\
# yaml-language-server: $schema=../kiln.schema.json
# Handwritten 8x8 digits (scikit-learn, offline) classified by a model defined in
# plugins/my_models.py. Run everything with `dvc repro`; try an experiment with
#   dvc exp run -S 'pipelines/digits.yaml:stages.train.optimizer.lr=0.005'
name: digits
task: classification
seed: 0
plugins: [../plugins/my_models.py]
stages:
  load_data:
    dataset: {name: sklearn_digits}
    split: {val: 0.15, test: 0.2}
  augment:
    train: []
  build_model:
    model: {name: my_mlp, hidden: 64}
  train:
    epochs: 15
    batch_size: 64
    optimizer: {name: Adam, lr: 2.0e-3}
    scheduler: {name: CosineAnnealingLR}
  evaluate:
    metrics: [accuracy, f1_macro, precision_recall, confusion_matrix]
  export:
    formats: [torchscript, onnx, safetensors]
"""

PLUGIN = '''\
"""Your components: register them exactly as torchkiln's built-ins are registered.

Keep torch imports inside build(): `kiln validate` never imports torch.
"""

from typing import Literal

from pydantic import PositiveInt

from torchkiln.registry import ModelConfig, models


@models.register
class MyMlp(ModelConfig):
    """A two-layer perceptron defined in this project."""

    name: Literal["my_mlp"] = "my_mlp"
    hidden: PositiveInt = 64
    """Width of the hidden layer."""

    def build(self, info):
        import math

        from torch import nn

        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(info.input_shape), self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, info.num_classes),
        )
'''

README = """\
# {name}

A torchkiln workspace: PyTorch pipelines as YAML, run and versioned by DVC.

## Next steps

```bash
dvc repro                      # run every stage (kiln is on PATH when its venv is active)
dvc metrics show               # accuracy, F1, ... of each pipeline
dvc plots show                 # loss curves, confusion matrix (opens an HTML page)

# edit pipelines/digits.yaml, then:
kiln validate                  # every error at once, with file:line:col
kiln dvc                       # regenerate dvc.yaml when you add stages, inputs or plugins
dvc repro                      # reruns only what your edit touched

dvc exp run -S 'pipelines/digits.yaml:stages.train.optimizer.lr=0.005'
dvc exp show                   # compare experiments
git add -A && git commit -m "..." && dvc push    # keep results; data goes to the DVC remote

gto register digits            # version the exported model (a git tag)
dvc artifacts get . digits --rev v0.0.1 -o model/   # fetch that version later
```

- `pipelines/` holds the specs; `plugins/my_models.py` registers a custom model.
- `runs/<pipeline>/<stage>/` holds each stage's outputs (DVC-tracked `out/`, plus
  `metrics.json` and `plots/` committed to git).
- The DVC remote is `{remote}` (change it with `dvc remote modify local url ...`).
- `kiln list` shows every component you can name; `kiln schema -o kiln.schema.json`
  refreshes the editor schema after you add components.
"""

GITIGNORE = """\
__pycache__/
*.pyc
/.kiln/
/dvc_plots/
"""

DVCIGNORE = """\
__pycache__/
*.pyc
.kiln/
"""


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RunError(f"`{' '.join(args)}` failed in {cwd}: {result.stderr.strip()}")


def _git_env() -> dict[str, str]:
    """Commit even where git has no user configured (a fresh machine, CI)."""
    env = dict(os.environ)
    probe = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True)
    if not probe.stdout.strip():
        env.setdefault("GIT_AUTHOR_NAME", "torchkiln")
        env.setdefault("GIT_AUTHOR_EMAIL", "torchkiln@localhost")
        env.setdefault("GIT_COMMITTER_NAME", "torchkiln")
        env.setdefault("GIT_COMMITTER_EMAIL", "torchkiln@localhost")
    return env


def init_workspace(target: Path, dvc: str, remote: Path | None = None) -> Path:
    """Create the workspace at `target` (must not exist or be empty); returns the remote path."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"{target} exists and is not empty; give a new folder")
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    storage = (remote or root.parent / f"{root.name}.dvc-storage").resolve()
    storage.mkdir(parents=True, exist_ok=True)
    (root / "pipelines").mkdir()
    (root / "plugins").mkdir()
    (root / "pipelines" / "digits.yaml").write_text(SPEC, encoding="utf-8")
    (root / "plugins" / "my_models.py").write_text(PLUGIN, encoding="utf-8")
    (root / "README.md").write_text(
        README.format(name=root.name, remote=storage.as_posix()), encoding="utf-8"
    )
    (root / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    env = _git_env()
    _run(["git", "init", "-q"], root, env)
    _run([dvc, "init", "-q"], root, env)
    (root / ".dvcignore").write_text(DVCIGNORE, encoding="utf-8")
    _run([dvc, "remote", "add", "-d", "local", storage.as_posix()], root, env)
    _run([dvc, "config", "core.analytics", "false"], root, env)
    return storage


def finish_workspace(root: Path) -> None:
    """Commit everything (called after dvc.yaml and the schema are written)."""
    env = _git_env()
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-q", "-m", "Start a torchkiln workspace"], root, env)
