"""The dataset artifact: how load_data writes it and how later stages read a split.

An artifact folder holds `meta.json` (format, DatasetInfo, split counts, source) and the
data in a format-specific layout:

- `tensors`: `data.safetensors` with `<split>.x` (uint8 images, N x C x H x W) and `<split>.y`.
- `image_index`: `index.json` listing each split's files (relative to the dataset root, with
  their sha256) and labels: an index, not a copy, for images the user brings.

Formats are looked up in `torchkiln.data.formats`, so a domain pack adds its own layout.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from torchkiln.data import formats
from torchkiln.data.info import DatasetInfo
from torchkiln.errors import InputError, RunError
from torchkiln.io import atomic_write_bytes, read_json, write_json

SPLITS = ("train", "val", "test")


#: Splits larger than this stay on disk and are decoded batch by batch.
MEMORY_LIMIT = 2 << 30


class SplitData(Protocol):
    """One split of a dataset, read by batches of indices."""

    targets: torch.Tensor
    #: each example's length (variable-length data such as text), else None: train's
    #: `bucket_by_length` groups batches by it
    lengths: torch.Tensor | None

    def __len__(self) -> int: ...

    def batch(self, index: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Inputs (a tuple, passed to the model's forward after preprocessing) and targets."""
        ...

    def materialize(self, max_bytes: int = MEMORY_LIMIT) -> SplitData:
        """The split held in memory when it fits in `max_bytes` (decoded once instead of
        every epoch), else itself. In-memory splits return themselves."""
        ...


@dataclass
class TensorSplit:
    """A split held in memory as tensors: batches are plain indexing, no per-example Python."""

    inputs: tuple[torch.Tensor, ...]
    targets: torch.Tensor
    lengths: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def batch(self, index: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        return tuple(t[index] for t in self.inputs), self.targets[index]

    def materialize(self, max_bytes: int = MEMORY_LIMIT) -> TensorSplit:
        return self


@dataclass
class DatasetArtifact:
    folder: Path
    meta: dict[str, Any]
    info: DatasetInfo
    _cache: dict[str, SplitData] = field(default_factory=dict)

    def split(self, name: str) -> SplitData:
        if name not in self._cache:
            read = formats.reader(self.meta["format"])
            if read is None:
                raise InputError(
                    f"dataset artifact {self.folder.as_posix()}/meta.json has format "
                    f"{self.meta['format']!r}, which no loaded pack reads",
                    self.folder / "meta.json",
                )
            split = read(self, name)
            if name in self.info.counts and len(split) != self.count(name):
                raise InputError(
                    f"{self.folder.as_posix()}/meta.json says the {name} split has "
                    f"{self.count(name)} examples, but its data has {len(split)}: the "
                    "artifact was changed after load_data wrote it",
                    self.folder / "meta.json",
                )
            self._cache[name] = split
        return self._cache[name]

    def count(self, name: str) -> int:
        return int(self.info.counts.get(name, 0))


def open_dataset(folder: Path) -> DatasetArtifact:
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise InputError(
            f"{folder.as_posix()} is not a dataset artifact ({meta_path.as_posix()} is missing)",
            meta_path,
        )
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("artifact") != "dataset":
        kind = meta.get("artifact") if isinstance(meta, dict) else None
        where = meta_path.as_posix()
        raise InputError(f"{where} describes a {kind!r} artifact, not a dataset", meta_path)
    try:
        return DatasetArtifact(folder, meta, DatasetInfo.from_json(meta["info"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(
            f"{meta_path.as_posix()} is not the dataset description load_data writes "
            f"({type(exc).__name__}: {exc})",
            meta_path,
        ) from exc


def read_safetensors(
    path: Path, keys: list[str] | None = None, *, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """The tensors of an artifact's safetensors file: `keys` when given, else those whose
    name starts with `prefix` (all by default); only those are read from the disk.
    A damaged file (truncated, overwritten) is an `InputError` naming it, and a missing one
    an OSError that does (the library's own errors name neither)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            listed = fh.keys()  # a safe_open handle is not iterable
            names = [k for k in listed if k.startswith(prefix)] if keys is None else keys
            return {k: fh.get_tensor(k) for k in names}
    except SafetensorError as exc:
        raise InputError(
            f"cannot read {path.as_posix()}: not a complete safetensors file ({exc})", path
        ) from exc
    except FileNotFoundError as exc:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path)) from exc


def read_tensors(artifact: DatasetArtifact, split: str) -> SplitData:
    # only this split's tensors: each split is read once, when a stage first asks for it
    tensors = read_safetensors(artifact.folder / "data.safetensors", prefix=f"{split}.")
    names = sorted(k.split(".", 1)[1] for k in tensors if k.startswith(f"{split}.x"))
    inputs = tuple(tensors[f"{split}.{n}"] for n in names)
    return TensorSplit(inputs, tensors[f"{split}.y"])


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A safetensors file, written atomically (every artifact's tensors go through here).
    Serialised in memory and written by Python: safetensors' own file writer reports a
    full disk as an error of its own, with no errno to name."""
    from safetensors.torch import save

    atomic_write_bytes(path, save(tensors))


def write_dataset(
    folder: Path,
    *,
    fmt: str,
    info: DatasetInfo,
    source: dict[str, Any],
    extra_meta: dict[str, Any] | None = None,
) -> None:
    write_json(
        folder / "meta.json",
        {
            "artifact": "dataset",
            "format": fmt,
            "info": info.to_json(),
            "source": source,
            **(extra_meta or {}),
        },
    )


def split_indices(
    labels: torch.Tensor,
    *,
    val: float,
    test: float,
    stratify: bool,
    seed: int,
) -> dict[str, torch.Tensor]:
    """Seeded train/val/test index split; stratified per class when asked. Indices are sorted."""
    gen = torch.Generator().manual_seed(seed)
    groups = (
        [torch.nonzero(labels == c).flatten() for c in labels.unique().tolist()]
        if stratify
        else [torch.arange(len(labels))]
    )
    parts: dict[str, list[torch.Tensor]] = {s: [] for s in SPLITS}
    for group in groups:
        shuffled = group[torch.randperm(len(group), generator=gen)]
        n_test = round(len(group) * test)
        n_val = round(len(group) * val)
        parts["test"].append(shuffled[:n_test])
        parts["val"].append(shuffled[n_test : n_test + n_val])
        parts["train"].append(shuffled[n_test + n_val :])
    return {
        s: torch.cat(p).sort().values if p else torch.empty(0, dtype=torch.long)
        for s, p in parts.items()
    }


def make_splits(
    labels: torch.Tensor, predefined: dict[str, torch.Tensor], cfg: Any, seed: int
) -> dict[str, torch.Tensor]:
    """Train/val/test indices from load_data's `split:` settings. An official test split
    is kept as it is; validation is then carved out of the rest."""
    if "test" in predefined:
        rest = [predefined[s] for s in predefined if s != "test"]
        if rest:
            pool = torch.cat(rest)
        else:  # only the test examples are named (e.g. text_table's test_path): the rest
            outside = torch.ones(len(labels), dtype=torch.bool)
            outside[predefined["test"]] = False
            pool = torch.arange(len(labels))[outside]
        inner = split_indices(labels[pool], val=cfg.val, test=0.0, stratify=cfg.stratify, seed=seed)
        splits = {
            "train": pool[inner["train"]],
            "val": pool[inner["val"]],
            "test": predefined["test"],
        }
    else:
        splits = split_indices(labels, val=cfg.val, test=cfg.test, stratify=cfg.stratify, seed=seed)
    if len(splits["train"]) == 0:
        raise RunError(
            f"the split leaves no training examples ({len(labels)} examples, split.val="
            f"{cfg.val}, split.test={cfg.test}); the dataset is too small for these fractions"
        )
    for name, fraction in (("val", cfg.val), ("test", cfg.test)):
        if fraction > 0 and len(splits[name]) == 0:
            raise RunError(
                f"split.{name}={fraction} gives no {name} examples; the dataset is too small"
            )
    return splits
