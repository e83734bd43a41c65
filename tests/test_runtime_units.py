"""Fast unit tests of the run-time building blocks (no subprocess): splitting, dataset
metadata, weight loading and freezing, the non-finite guard, epoch order, atomic writes,
epoch checkpoints and the runner's staged output swap."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from torchkiln.data.info import DatasetInfo
from torchkiln.errors import RunError
from torchkiln.io import atomic_path, atomic_write_text, write_json
from torchkiln.runtime.checkpoints import Checkpointer, run_key
from torchkiln.runtime.datasets import make_splits, split_indices
from torchkiln.runtime.engine import NonFiniteGuard
from torchkiln.runtime.loop import epoch_order
from torchkiln.runtime.model_artifact import freeze, load_weights, read_state_dict
from torchkiln.schemas.spec import Pipeline

CPU = torch.device("cpu")


# -- split_indices / make_splits ------------------------------------------------------


def labels_60() -> torch.Tensor:
    """30 of class 0, 20 of class 1, 10 of class 2, interleaved (not sorted by class)."""
    labels = torch.tensor([0] * 30 + [1] * 20 + [2] * 10)
    return labels[torch.randperm(60, generator=torch.Generator().manual_seed(123))]


def test_split_is_stratified() -> None:
    labels = labels_60()
    parts = split_indices(labels, val=0.2, test=0.2, stratify=True, seed=0)
    expected = {"train": [18, 12, 6], "val": [6, 4, 2], "test": [6, 4, 2]}
    for name, counts in expected.items():
        assert torch.bincount(labels[parts[name]], minlength=3).tolist() == counts, name


def test_split_is_disjoint_complete_and_sorted() -> None:
    for stratify in (True, False):
        parts = split_indices(labels_60(), val=0.15, test=0.25, stratify=stratify, seed=7)
        together = torch.cat(list(parts.values()))
        assert sorted(together.tolist()) == list(range(60))  # complete, no duplicates
        for index in parts.values():
            assert index.tolist() == sorted(index.tolist())
            assert index.dtype == torch.long


def test_split_is_seeded() -> None:
    labels = labels_60()
    a = split_indices(labels, val=0.2, test=0.2, stratify=True, seed=0)
    b = split_indices(labels, val=0.2, test=0.2, stratify=True, seed=0)
    c = split_indices(labels, val=0.2, test=0.2, stratify=True, seed=1)
    torch.manual_seed(999)  # the global generator plays no part
    d = split_indices(labels, val=0.2, test=0.2, stratify=True, seed=0)
    assert all(a[s].equal(b[s]) and a[s].equal(d[s]) for s in a)
    assert not a["test"].equal(c["test"])


def test_unstratified_split_sizes() -> None:
    parts = split_indices(labels_60(), val=0.1, test=0.2, stratify=False, seed=0)
    assert {s: len(i) for s, i in parts.items()} == {"train": 42, "val": 6, "test": 12}


def test_split_too_small_for_validation_is_an_error() -> None:
    cfg = SimpleNamespace(val=0.1, test=0.0, stratify=True)
    with pytest.raises(RunError, match=r"split.val=0.1 gives no val examples"):
        make_splits(torch.tensor([0, 0, 1, 1]), {}, cfg, seed=0)


def test_official_test_split_is_kept() -> None:
    labels = labels_60()
    official = {"train": torch.arange(50), "test": torch.arange(50, 60)}
    cfg = SimpleNamespace(val=0.2, test=0.5, stratify=True)
    parts = make_splits(labels, official, cfg, seed=0)
    assert parts["test"].tolist() == list(range(50, 60))
    assert sorted(torch.cat([parts["train"], parts["val"]]).tolist()) == list(range(50))


def test_an_official_test_split_alone_leaves_the_rest_for_train_and_val() -> None:
    """A dataset that names only its test examples (text_table's `test_path`)."""
    labels = labels_60()
    cfg = SimpleNamespace(val=0.2, test=0.5, stratify=True)
    parts = make_splits(labels, {"test": torch.arange(45, 60)}, cfg, seed=0)
    assert parts["test"].tolist() == list(range(45, 60))
    assert sorted(torch.cat([parts["train"], parts["val"]]).tolist()) == list(range(45))
    assert len(parts["val"]) == 9  # 0.2 of the 45 others, not of all 60


# -- DatasetInfo ----------------------------------------------------------------------


def test_dataset_info_round_trips_through_json() -> None:
    info = DatasetInfo(
        modality="image",
        task="classification",
        classes=("cat", "dog"),
        input_shape=(3, 8, 8),
        counts={"train": 10, "val": 2, "test": 3},
        mean=(0.1, 0.2, 0.3),
        std=(0.5, 0.5, 0.5),
        extra={"train_class_counts": [5, 5]},
    )
    again = DatasetInfo.from_json(json.loads(json.dumps(info.to_json())))
    assert again == info
    assert again.num_classes == 2 and again.in_channels == 3
    # older artifacts without the optional fields still read
    minimal = {k: v for k, v in info.to_json().items() if k not in ("mean", "std", "extra")}
    assert DatasetInfo.from_json(minimal).mean == ()


# -- weights --------------------------------------------------------------------------


def two_layers() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def odd_source() -> dict[str, torch.Tensor]:
    """Right shape for 0.weight, wrong for 0.bias, no layer 2, an unknown 9.weight."""
    return {
        "0.weight": torch.full((3, 4), 7.0),
        "0.bias": torch.zeros(5),
        "9.weight": torch.ones(1),
    }


def test_partial_load_reports_every_kind_of_difference() -> None:
    module = two_layers()
    bias_before = module[0].bias.detach().clone()
    report = load_weights(module, odd_source(), strict=False, exclude=[])
    assert report == {
        "loaded": ["0.weight"],
        "missing": ["2.bias", "2.weight"],
        "unexpected": ["9.weight"],
        "shape_mismatch": ["0.bias"],
        "excluded": [],
    }
    assert (module[0].weight == 7.0).all()
    assert module[0].bias.equal(bias_before)


def test_excluded_weights_are_not_loaded() -> None:
    module = two_layers()
    report = load_weights(module, odd_source(), strict=False, exclude=["0.*"])
    assert report["excluded"] == ["0.bias", "0.weight"]
    assert report["loaded"] == [] and report["shape_mismatch"] == []
    # what the patterns exclude is meant to stay fresh: reported as excluded, not missing
    assert report["missing"] == ["2.bias", "2.weight"]
    assert not (module[0].weight == 7.0).any()


def test_strict_load_names_the_problems_and_the_fix() -> None:
    module = two_layers()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(RunError) as caught:
        load_weights(module, odd_source(), strict=True, exclude=[])
    message = str(caught.value)
    assert "missing: 2.bias, 2.weight" in message
    assert "unexpected: 9.weight" in message
    assert "shape mismatch: 0.bias" in message
    assert "`weights.strict: false`" in message and "exclude:" in message
    assert all(module.state_dict()[k].equal(v) for k, v in before.items())  # untouched


def test_strict_load_of_matching_weights() -> None:
    source = {k: v + 1 for k, v in two_layers().state_dict().items()}
    module = two_layers()
    report = load_weights(module, source, strict=True, exclude=[])
    assert report["loaded"] == sorted(source)
    assert all(module.state_dict()[k].equal(v) for k, v in source.items())


def test_read_state_dict_unwraps_checkpoints(tmp_path: Path) -> None:
    state = two_layers().state_dict()
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pt")
    loaded = read_state_dict(tmp_path / "ckpt.pt")
    assert sorted(loaded) == sorted(state)
    with pytest.raises(RunError, match="does not exist"):
        read_state_dict(tmp_path / "nope.safetensors")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(RunError, match="does not hold a state_dict"):
        read_state_dict(tmp_path / "list.pt")


def test_freeze_patterns() -> None:
    module = two_layers()
    frozen = freeze(module, ["0", "*.bias"])  # a module prefix, and an fnmatch pattern
    assert frozen == ["0.bias", "0.weight", "2.bias"]
    assert [n for n, p in module.named_parameters() if p.requires_grad] == ["2.weight"]


def test_freeze_pattern_matching_nothing_is_an_error() -> None:
    module = two_layers()
    with pytest.raises(RunError) as caught:
        freeze(module, ["features.*"])
    message = str(caught.value)
    assert "'features.*' matches no parameter" in message
    assert "0, 2" in message  # what the names do start with
    assert all(p.requires_grad for p in module.parameters())


# -- NonFiniteGuard and epoch order ---------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_guard_names_the_first_bad_step(bad: float) -> None:
    guard = NonFiniteGuard(steps=20, device=CPU, every=5)
    with pytest.raises(RunError) as caught:
        for step in range(20):
            loss = torch.tensor(bad if step in (7, 8) else 1.0)
            guard.record(step, loss)
            guard.check(step, epoch=3)
    message = str(caught.value)
    assert "at epoch 3, step 8;" in message  # step 7 counted from 0 is the 8th step
    assert guard.checked == 5  # raised at the check after step 9, not later


def test_non_finite_guard_forced_check_at_the_last_step() -> None:
    guard = NonFiniteGuard(steps=3, device=CPU, every=25)
    for step, value in enumerate([1.0, 2.0, math.nan]):
        guard.record(step, torch.tensor(value))
        guard.check(step, epoch=1, force=False)  # never due: every=25
    with pytest.raises(RunError, match=r"loss became nan at epoch 1, step 3"):
        guard.check(2, epoch=1, force=True)


def test_non_finite_guard_is_quiet_on_finite_losses() -> None:
    guard = NonFiniteGuard(steps=50, device=CPU, every=7)
    for step in range(50):
        guard.record(step, torch.tensor(float(step)))
        guard.check(step, epoch=1, force=step == 49)
    assert guard.checked == 50


def test_epoch_order_is_a_seeded_permutation() -> None:
    first = epoch_order(100, seed=0, epoch=3)
    torch.manual_seed(12345)  # the global generator plays no part
    assert first.equal(epoch_order(100, seed=0, epoch=3))
    assert sorted(first.tolist()) == list(range(100))
    assert not first.equal(epoch_order(100, seed=0, epoch=4))
    assert not first.equal(epoch_order(100, seed=1, epoch=3))


# -- atomic output --------------------------------------------------------------------


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "weights.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of it")
        raise RuntimeError("killed mid-write")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_json(target, {"accuracy": 0.5})
    with pytest.raises(ValueError):
        write_json(target, {"accuracy": math.nan})  # JSON has no NaN: refused
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("{")
        raise RuntimeError
    assert json.loads(target.read_text()) == {"accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_write_output_is_byte_stable(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    write_json(tmp_path / "b.json", {"a": [1, 2], "b": 1})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    atomic_write_text(tmp_path / "c.txt", "x")
    assert (tmp_path / "c.txt").stat().st_mode & 0o777 == 0o644


# -- epoch checkpoints ----------------------------------------------------------------


def test_checkpointer_round_trip_and_stale_files(tmp_path: Path) -> None:
    folder = tmp_path / "scratch"
    folder.mkdir()
    (folder / "0123456789abcdef.pt").write_bytes(b"another run")
    checkpoints = Checkpointer(folder, "f" * 64)
    assert checkpoints.load() is None
    checkpoints.save({"epoch": 2, "model": {"w": torch.ones(2)}})
    assert [p.name for p in folder.iterdir()] == ["ffffffffffffffff.pt"]  # stale one removed
    state = checkpoints.load()
    assert state is not None and state["epoch"] == 2 and state["model"]["w"].equal(torch.ones(2))
    checkpoints.clear()
    assert not checkpoints.path.exists()
    assert Checkpointer(folder, "f" * 64, enabled=False).load() is None


def test_an_unreadable_checkpoint_stops_the_stage_naming_the_file(tmp_path: Path) -> None:
    """Checkpoints are written atomically, so a damaged one was damaged by something else:
    the stage stops with the file and the fix, instead of silently training from scratch."""
    checkpoints = Checkpointer(tmp_path, "f" * 64, stage="fit")
    checkpoints.save({"epoch": 1})
    checkpoints.path.write_bytes(b"torn")
    with pytest.raises(RunError) as caught:
        checkpoints.load()
    message = str(caught.value)
    assert "cannot resume stage 'fit'" in message
    assert checkpoints.path.as_posix() in message and "Delete that file" in message
    torch.save({"epoch": 1, "format": 1}, checkpoints.path)  # an older layout
    with pytest.raises(RunError, match="not a torchkiln checkpoint of this version"):
        checkpoints.load()


def test_run_key_changes_with_whatever_the_result_depends_on(tmp_path: Path) -> None:
    """A changed config, seed or input starts training afresh instead of resuming."""

    class Cfg(SimpleNamespace):
        def model_dump(self, mode: str) -> dict[str, object]:
            return dict(vars(self))

    data = tmp_path / "data"
    data.mkdir()
    (data / "meta.json").write_text("{}")
    inputs = {"dataset": data}
    key = run_key(Cfg(epochs=3, lr=0.1), 0, "classification", "cpu", inputs)
    assert key == run_key(Cfg(epochs=3, lr=0.1), 0, "classification", "cpu", inputs)
    assert key != run_key(Cfg(epochs=3, lr=0.2), 0, "classification", "cpu", inputs)
    assert key != run_key(Cfg(epochs=3, lr=0.1), 1, "classification", "cpu", inputs)
    (data / "meta.json").write_text('{"changed": true}')
    assert key != run_key(Cfg(epochs=3, lr=0.1), 0, "classification", "cpu", inputs)


# -- the runner's staged swap ---------------------------------------------------------


def synthetic_pipeline(folder: Path) -> Pipeline:
    from torchkiln.schemas.spec import load_pipeline

    (folder / "swap.yaml").write_text(
        "name: swap\nstages:\n  load_data:\n"
        "    dataset: {name: synthetic, num_classes: 2, per_class: 8, image_size: 4}\n"
    )
    return load_pipeline(Path("swap.yaml"))


def test_a_failing_stage_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchkiln.runner import run_stage
    from torchkiln.stages.load_data import LoadData

    monkeypatch.chdir(tmp_path)
    pipeline = synthetic_pipeline(tmp_path)
    run_stage(pipeline, "load_data", log=False)
    stage_root = tmp_path / "runs/swap/load_data"
    assert (stage_root / "out/meta.json").is_file()

    def half_then_fail(self: object, ctx: object) -> None:
        write_json(ctx.out_dir / "meta.json", {"half": True})  # type: ignore[attr-defined]
        raise RunError("disk full")

    monkeypatch.setattr(LoadData, "run", half_then_fail)
    with pytest.raises(RunError, match="disk full"):
        run_stage(pipeline, "load_data", log=False)
    # the old output was removed first (as DVC does) and the half-built one never appeared
    assert list(stage_root.iterdir()) == []


def test_leftover_staging_from_a_killed_run_is_cleaned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchkiln.runner import run_stage

    monkeypatch.chdir(tmp_path)
    pipeline = synthetic_pipeline(tmp_path)
    leftover = tmp_path / "runs/swap/load_data/.staging-killed/out"
    leftover.mkdir(parents=True)
    (leftover / "meta.json").write_text("{}")
    run_stage(pipeline, "load_data", log=False)
    names = sorted(p.name for p in (tmp_path / "runs/swap/load_data").iterdir())
    assert names == ["out"]
