"""Pretrained word vectors (GloVe / word2vec text files) into a model's embedding.

Called once, by build_model (through the model config's `initialize` hook): the vectors
become part of the model artifact's weights, so later stages never read the file again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchkiln.errors import RunError
from torchkiln.io import read_json
from torchkiln.runtime.progress import log
from torchkiln.text.vocab import Vocabulary


def _rows(path: Path) -> tuple[int | None, Any]:
    """(width from a word2vec header or None, iterator of (line number, word, values))."""
    fh = path.open(encoding="utf-8", errors="strict")
    first = fh.readline()
    parts = first.rstrip("\n").rstrip(" ").split(" ")
    header = len(parts) == 2 and all(p.isdigit() for p in parts)

    def rows() -> Any:
        with fh:
            number = 1
            if not header:
                yield number, parts[0], parts[1:]
            for line in fh:
                number += 1
                fields = line.rstrip("\n").rstrip(" ").split(" ")
                if len(fields) > 1:
                    yield number, fields[0], fields[1:]

    return (int(parts[1]) if header else None), rows()


def load_pretrained(embedding: nn.Embedding, dataset: Any, cfg: Any) -> dict[str, Any]:
    """Copy the vectors of the vocabulary's tokens into `embedding`; report coverage."""
    path = Path(cfg.path)
    if not path.is_file():
        raise RunError(f"pretrained vectors file {cfg.path!r} does not exist")
    vocab_file = dataset.folder / "vocab.json"
    if not vocab_file.exists():
        raise RunError(f"{dataset.folder.as_posix()} has no vocab.json: is it a text dataset?")
    vocab = Vocabulary.from_json(read_json(vocab_file))
    dim = embedding.embedding_dim
    specials = set(vocab.specials.values())
    wanted = {t: i for i, t in enumerate(vocab.tokens) if t not in specials}
    lowered: dict[str, list[int]] = {}
    for token, i in wanted.items():
        lowered.setdefault(token.lower(), []).append(i)
    found: dict[int, list[float]] = {}
    exact: set[int] = set()
    try:
        width, rows = _rows(path)
        if width is not None and width != dim:
            raise RunError(
                f"{cfg.path} holds {width}-dimensional vectors but embedding_dim is {dim}; "
                f"set the model's embedding_dim to {width}"
            )
        for number, word, values in rows:
            if len(values) != dim:
                raise RunError(
                    f"{cfg.path}:{number}: the vector of {word!r} has {len(values)} values, "
                    f"but embedding_dim is {dim}; set embedding_dim to the file's width"
                )
            hits = [wanted[word]] if word in wanted else []
            for i in lowered.get(word.lower(), []):  # "Paris" also fills "paris"
                if i not in exact and i not in hits:
                    hits.append(i)
            if not hits:
                continue
            try:
                vector = [float(v) for v in values]
            except ValueError as exc:
                raise RunError(f"{cfg.path}:{number}: not a vector of numbers") from exc
            for i in hits:
                if i not in exact:
                    found[i] = vector
            if word in wanted:
                exact.add(wanted[word])
    except UnicodeDecodeError as exc:
        raise RunError(f"{cfg.path} is not UTF-8 text ({exc.reason})") from exc
    with torch.no_grad():
        if found:
            rows_index = torch.tensor(sorted(found))
            embedding.weight[rows_index] = torch.tensor([found[i] for i in sorted(found)])
        if embedding.padding_idx is not None:
            embedding.weight[embedding.padding_idx].zero_()
    if cfg.freeze:
        embedding.weight.requires_grad_(False)
    counts = vocab.counts
    total = sum(counts[i] for i in wanted.values())
    covered = sum(counts[i] for i in found)
    report = {
        "pretrained_vectors": path.as_posix(),
        "vocabulary": len(wanted),
        "found": len(found),
        "coverage": round(len(found) / len(wanted), 6) if wanted else 0.0,
        "token_coverage": round(covered / total, 6) if total else 0.0,
        "frozen": cfg.freeze,
    }
    log(
        f"pretrained vectors {path.as_posix()}: {len(found):,} of {len(wanted):,} vocabulary "
        f"tokens found ({report['coverage']:.1%}; {report['token_coverage']:.1%} of train "
        f"tokens), embedding {'frozen' if cfg.freeze else 'fine-tuned'}"
    )
    return report
