"""`train.loggers: [tensorboard]`: event files under .kiln/tensorboard (not outputs), and
a clear validation error when the extra is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_tools import digests, kiln, ok, write_spec

from torchkiln.errors import SpecError
from torchkiln.schemas.spec import load_pipeline
from torchkiln.stages import loggers

STAGES = {
    "load_data": {
        "dataset": {"name": "synthetic", "num_classes": 3, "per_class": 20, "image_size": 8},
        "split": {"val": 0.2, "test": 0.2},
    },
    "build_model": {"model": {"name": "mlp", "hidden": [16]}},
    "train": {"epochs": 2, "batch_size": 8},
}


def test_naming_the_logger_without_the_extra_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(tmp_path, "p", {**STAGES, "train": {"loggers": ["tensorboard"]}})
    monkeypatch.setattr(loggers, "installed", lambda package: package != "tensorboard")
    with pytest.raises(SpecError) as caught:
        load_pipeline(spec)
    (issue,) = caught.value.issues
    assert issue.path == "stages.train.loggers[0]"
    assert "needs the tensorboard package: pip install 'torchkiln[tensorboard]'" in issue.message


@pytest.mark.e2e
def test_event_files_are_written_beside_unchanged_outputs(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    plain, logged = tmp_path / "plain", tmp_path / "logged"
    for folder, train in ((plain, {}), (logged, {"loggers": ["tensorboard"]})):
        folder.mkdir()
        write_spec(folder, "p", {**STAGES, "train": {**STAGES["train"], **train}})
        ok(kiln("run", "p.yaml", cwd=folder))
    assert digests(plain / "runs") == digests(logged / "runs")  # logging changes no output
    events = EventAccumulator(str(logged / ".kiln/tensorboard/p/train"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"step/loss", "epoch/train_loss", "epoch/val_accuracy", "lr/lr"} <= set(scalars)
    assert len(events.Scalars("step/loss")) == 2 * 5  # 36 train examples, batch 8: 5 steps
    assert [e.step for e in events.Scalars("epoch/val_loss")] == [1, 2]
    assert events.Tags()["images"] == ["train/first_batch"]
    assert not (plain / ".kiln/tensorboard").exists()
