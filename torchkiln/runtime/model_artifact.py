"""The model artifact (build_model's and train's output): architecture config + weights.

`model.json` records the model config, the dataset description it was built for and
which parameters are frozen; `weights.safetensors` holds the state dict. Anything that
can rebuild the config (torchkiln with the same plugins) can rebuild the module.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchkiln.data.info import DatasetInfo
from torchkiln.errors import InputError, RunError
from torchkiln.io import read_json, write_json
from torchkiln.registry import kinds
from torchkiln.runtime.datasets import read_safetensors, write_tensors

WEIGHTS = "weights.safetensors"


def state_for_saving(module: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies (safetensors refuses tensors that share memory)."""
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in module.state_dict().items()}


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    write_tensors(path, state)


@dataclass
class ModelArtifact:
    folder: Path
    meta: dict[str, Any]

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo.from_json(self.meta["info"])

    @property
    def frozen(self) -> list[str]:
        return list(self.meta.get("frozen", []))

    def config(self) -> Any:
        from torchkiln.packs import load_builtins

        load_builtins()  # usable outside the CLI too (a library user, a notebook)
        raw = self.meta["model"]
        return kinds.models.get(raw["name"]).model_validate(raw)

    def build(self, load_weights: bool = True) -> nn.Module:
        module = self.config().build(self.info)
        if load_weights:
            path = self.folder / WEIGHTS
            try:
                module.load_state_dict(read_safetensors(path))
            except RuntimeError as exc:  # other names or shapes than model.json's model
                first = str(exc).splitlines()[0]
                raise InputError(
                    f"{path.as_posix()} does not hold the weights of the model "
                    f"{self.folder.as_posix()}/model.json describes ({first})",
                    path,
                ) from exc
        for name, param in module.named_parameters():
            if name in set(self.frozen):
                param.requires_grad_(False)
        return module


def write_model(
    folder: Path,
    *,
    config: Any,
    info: DatasetInfo,
    state: dict[str, torch.Tensor],
    frozen: list[str],
    extra: dict[str, Any] | None = None,
) -> None:
    save_weights(state, folder / WEIGHTS)
    write_json(
        folder / "model.json",
        {
            "artifact": "model",
            "model": config.model_dump(mode="json"),
            "info": info.to_json(),
            "frozen": frozen,
            **(extra or {}),
        },
    )


def open_model(folder: Path) -> ModelArtifact:
    meta_path = folder / "model.json"
    if not meta_path.exists():
        raise InputError(
            f"{folder.as_posix()} is not a model artifact ({meta_path.as_posix()} is missing)",
            meta_path,
        )
    meta = read_json(meta_path)
    model = meta.get("model") if isinstance(meta, dict) else None
    if not isinstance(model, dict) or "name" not in model or "info" not in meta:
        raise InputError(
            f"{meta_path.as_posix()} is not the model description a model stage writes", meta_path
        )
    return ModelArtifact(folder, meta)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file, a torch state_dict file, or a model/export folder."""
    if path.is_dir():
        for name in (WEIGHTS, "model.safetensors"):
            if (path / name).exists():
                return read_state_dict(path / name)
        raise RunError(f"{path} holds no {WEIGHTS} or model.safetensors")
    if not path.exists():
        raise RunError(f"weights file {path.as_posix()} does not exist")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunError(f"cannot read weights {path.as_posix()}: {exc}") from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise RunError(f"{path.as_posix()} does not hold a state_dict of tensors")
    return loaded


def load_weights(
    module: nn.Module, source: dict[str, torch.Tensor], *, strict: bool, exclude: list[str]
) -> dict[str, list[str]]:
    """Load matching weights; strict demands every key and shape match. Returns a report."""
    own = module.state_dict()
    excluded = sorted(k for k in source if any(fnmatch.fnmatch(k, p) for p in exclude))
    given = {k: v for k, v in source.items() if k not in excluded}
    mismatched = sorted(k for k, v in given.items() if k in own and own[k].shape != v.shape)
    report = {
        "loaded": sorted(k for k in given if k in own and k not in mismatched),
        # Keys the exclude patterns name are meant to stay fresh: not "missing".
        "missing": sorted(
            k for k in own if k not in given and not any(fnmatch.fnmatch(k, p) for p in exclude)
        ),
        "unexpected": sorted(k for k in given if k not in own),
        "shape_mismatch": mismatched,
        "excluded": excluded,
    }
    if strict and (report["missing"] or report["unexpected"] or mismatched):
        problems = []
        for key in ("missing", "unexpected", "shape_mismatch"):
            if report[key]:
                shown = ", ".join(report[key][:6]) + (" ..." if len(report[key]) > 6 else "")
                problems.append(f"{key.replace('_', ' ')}: {shown}")
        raise RunError(
            "the weights do not match the model (" + "; ".join(problems) + "). Set "
            "`weights.strict: false` to load what matches, and `exclude:` patterns for "
            "layers you replace (e.g. the classifier head)"
        )
    with torch.no_grad():
        for key in report["loaded"]:
            own[key].copy_(given[key])
    return report


def freeze(module: nn.Module, patterns: list[str]) -> list[str]:
    """Turn off gradients for parameters matching any pattern; each pattern must match."""
    names = [n for n, _ in module.named_parameters()]
    frozen: set[str] = set()
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatch(n, pattern) or n.startswith(pattern + ".")]
        if not hits:
            raise RunError(
                f"freeze pattern {pattern!r} matches no parameter; parameter names start with: "
                + ", ".join(sorted({n.split(".")[0] for n in names}))
            )
        frozen.update(hits)
    for name, param in module.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    return sorted(frozen)
