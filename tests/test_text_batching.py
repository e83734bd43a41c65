"""Text batching and models: padding to the batch maximum, length buckets, packed and masked
RNN paths, and that padding never changes a text's result; export parity at several batch
sizes and sequence lengths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchkiln.data.info import DatasetInfo
from torchkiln.runtime.loop import bucketed_chunks, chunks
from torchkiln.text import models as text_models
from torchkiln.text.loading import TextSplit
from torchkiln.text.nets import reverse_within

LENGTHS = [7, 3, 5, 1, 7, 2, 6]


def _info(vocab_size: int = 40, cls_index: int | None = None) -> DatasetInfo:
    return DatasetInfo(
        modality="text",
        task="classification",
        classes=("a", "b", "c"),
        input_shape=(),
        counts={"train": 1, "val": 0, "test": 0},
        extra={"vocab_size": vocab_size, "pad_index": 0, "cls_index": cls_index, "max_length": 16},
    )


def _split(lengths: list[int], seed: int = 0) -> TextSplit:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, 40, (sum(lengths),), generator=gen, dtype=torch.int32)
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    targets = torch.arange(len(lengths)) % 3
    return TextSplit(tokens, offsets, targets, folder=Path("."), split="train")


def test_batches_pad_to_their_longest_example() -> None:
    split = _split(LENGTHS)
    (tokens, lengths), targets = split.batch(torch.tensor([1, 3, 5]))
    assert tokens.dtype == torch.int64 and tokens.shape == (3, 3)  # longest of 3, 1, 2
    assert lengths.tolist() == [3, 1, 2]
    assert targets.tolist() == [1, 0, 2]
    for row, i in enumerate([1, 3, 5]):
        own = split.tokens[split.offsets[i] : split.offsets[i + 1]]
        assert tokens[row, : LENGTHS[i]].tolist() == own.tolist()
        assert (tokens[row, LENGTHS[i] :] == 0).all()


def test_length_buckets_cover_every_example_once_with_less_padding() -> None:
    lengths = torch.randint(1, 200, (1000,), generator=torch.Generator().manual_seed(1))
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(2))
    plain = chunks(order, 32)
    buckets = bucketed_chunks(order, lengths, 32, pool=10, seed=3)
    assert len(buckets) == len(plain)  # schedulers counting steps are unaffected
    assert sorted(torch.cat(buckets).tolist()) == list(range(1000))
    assert [b.tolist() for b in buckets] == [
        b.tolist() for b in bucketed_chunks(order, lengths, 32, pool=10, seed=3)
    ]

    def padding(batches: list[torch.Tensor]) -> int:
        return sum(int((lengths[b].max() - lengths[b]).sum()) for b in batches)

    assert padding(buckets) < padding(plain) / 5


def test_reversing_within_the_length_leaves_padding_last_and_undoes_itself() -> None:
    x = torch.arange(2 * 5, dtype=torch.float32).reshape(2, 5, 1)
    lengths = torch.tensor([5, 2])
    flipped = reverse_within(x, lengths)
    assert flipped[0, :, 0].tolist() == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert flipped[1, :, 0].tolist() == [6.0, 5.0, 7.0, 8.0, 9.0]  # padding stays last
    assert torch.equal(reverse_within(flipped, lengths), x)


def _model(cfg: text_models.TextModelConfig, info: DatasetInfo | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    return cfg.build(info or _info()).eval()


def _alone(model: torch.nn.Module, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each text run by itself, unpadded."""
    return torch.cat(
        [model(tokens[i : i + 1, : int(n)], lengths[i : i + 1]) for i, n in enumerate(lengths)]
    )


RNNS = [
    text_models.RnnClassifier(cell="lstm", layers=2, bidirectional=True, pooling="max", pack=True),
    text_models.RnnClassifier(cell="gru", layers=1, bidirectional=True, pooling="last"),
    text_models.RnnClassifier(cell="rnn", layers=2, bidirectional=False, pooling="mean"),
    text_models.RnnClassifier(
        cell="lstm", layers=1, bidirectional=True, pooling="mean", pack=False
    ),
    text_models.RnnClassifier(cell="rnn", layers=1, bidirectional=True, pooling="max", pack=True),
]


@pytest.mark.parametrize("cfg", RNNS, ids=lambda c: f"{c.cell}-{c.pooling}-pack{c.pack}")
@torch.no_grad()
def test_rnn_packed_and_masked_paths_equal_unpadded_texts(cfg: text_models.RnnClassifier) -> None:
    cfg = cfg.model_copy(update={"embedding_dim": 8, "hidden_size": 6})
    model = _model(cfg)
    (tokens, lengths), _ = _split(LENGTHS).batch(torch.arange(len(LENGTHS)))
    batched = model(tokens, lengths)
    torch.testing.assert_close(batched, _alone(model, tokens, lengths), rtol=1e-5, atol=1e-6)
    # the masked path (what exported files compute) equals packing, position by position
    x = model.embedding(tokens)
    keep = (torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
    for layer in model.encoder:
        packed = model._packed(layer, x, lengths)
        through_masks = model._masked(layer, x, lengths)
        assert packed.shape[-1] == cfg.hidden_size * (2 if cfg.bidirectional else 1)
        torch.testing.assert_close(packed * keep, through_masks * keep, rtol=1e-5, atol=1e-6)
        x = packed


OTHERS = [
    text_models.EmbeddingBag(embedding_dim=8, bigram_buckets=50, hidden=6),
    text_models.TransformerClassifier(embedding_dim=8, heads=2, feedforward=16, pooling="mean"),
    text_models.TransformerClassifier(
        embedding_dim=8, heads=2, feedforward=16, pooling="cls", positions="sinusoidal"
    ),
    text_models.TextCnn(embedding_dim=8, filters=4, kernel_sizes=[2, 3]),
]


@pytest.mark.parametrize("cfg", OTHERS, ids=lambda c: f"{c.name}")
@torch.no_grad()
def test_padding_never_changes_a_texts_result(cfg: text_models.TextModelConfig) -> None:
    model = _model(cfg)
    (tokens, lengths), _ = _split(LENGTHS).batch(torch.arange(len(LENGTHS)))
    torch.testing.assert_close(
        model(tokens, lengths), _alone(model, tokens, lengths), rtol=1e-5, atol=1e-5
    )


def test_transformer_cls_pooling_uses_the_datasets_cls_token() -> None:
    cfg = text_models.TransformerClassifier(embedding_dim=8, heads=2, pooling="cls")
    assert cfg.build(_info(cls_index=2)).cls is None
    assert cfg.build(_info()).cls is not None
    with pytest.raises(ValueError, match="must divide"):
        text_models.TransformerClassifier(embedding_dim=10, heads=4)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
@pytest.mark.parametrize("cfg", [RNNS[0], OTHERS[1]], ids=["bilstm", "transformer"])
def test_torchscript_export_parity_at_other_lengths_and_batches(
    cfg: text_models.TextModelConfig, tmp_path: Path
) -> None:
    from torchkiln.common.exporters import TorchScript
    from torchkiln.text.preprocess import TextPreprocessor

    if isinstance(cfg, text_models.RnnClassifier):
        cfg = cfg.model_copy(update={"embedding_dim": 8, "hidden_size": 6})
    model = _model(cfg)
    stored, _ = _split(LENGTHS).batch(torch.arange(6))
    target = TextPreprocessor(_info()).export_target(model, stored, lambda s: model)
    shapes = {tuple(x[0].shape) for x in target.check_inputs()}
    assert {s[0] for s in shapes} >= {6, 3, 1} and {s[1] for s in shapes} >= {7, 3}
    result = TorchScript(tolerance=1e-5).export(target, tmp_path)
    assert result["max_abs_diff"] <= 1e-5
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    tokens, lengths = stored[0][:2, :4], stored[1][:2].clamp(max=4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens, lengths), model(tokens, lengths))
