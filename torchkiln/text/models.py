"""Text models. Configs only; the torch modules live in text/nets.py.

Every text model takes `(tokens int64 [batch, seq], lengths int64 [batch])`, right-padded
with `<pad>` (id 0), and names its parts alike: `embedding` (token vectors), `encoder`
(where there is one), `head` (the classifier). So `freeze: [embedding]` and, when
fine-tuning on a new label set, `weights: {..., strict: false, exclude: ["head.*"]}` work
the same for all of them.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from torchkiln.data.info import DatasetInfo
from torchkiln.registry import ModelConfig, models
from torchkiln.registry.component import Config
from torchkiln.schemas.fields import LocalPath

Dropout = Annotated[float, Field(ge=0, lt=1)]
Width = Annotated[int, Field(ge=1, le=65_536)]


class PretrainedVectors(Config):
    """Initial token vectors from a local GloVe or word2vec text file."""

    path: LocalPath
    """The vectors file (relative to the repository root): GloVe lines `word v1 v2 ...`, or
    word2vec text format (a first line `count dim`). Its width must equal `embedding_dim`."""
    freeze: bool = False
    """Keep the embedding fixed during training (true) or fine-tune it (false)."""


class TextModelConfig(ModelConfig):
    """Base of the text models: a token embedding, optionally from pretrained vectors."""

    modalities: ClassVar[frozenset[str]] = frozenset({"text"})

    embedding_dim: Width = 128
    """Width of the token vectors."""
    pretrained: PretrainedVectors | None = None
    """Initialise the embedding from word vectors; coverage is reported by build_model."""

    def initialize(self, module: Any, dataset: Any) -> dict[str, Any] | None:
        if self.pretrained is None:
            return None
        from torchkiln.text.vectors import load_pretrained

        return load_pretrained(module.embedding, dataset, self.pretrained)


@models.register
class EmbeddingBag(TextModelConfig):
    """fastText-style baseline: the mean of the token (and hashed bigram) vectors, then linear."""

    name: Literal["embedding_bag"] = "embedding_bag"
    embedding_dim: Width = 64
    """Width of the token vectors."""
    bigram_buckets: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    """Hash buckets for word bigrams, as fastText does (0: tokens only)."""
    hidden: PositiveInt | None = None
    """Width of a hidden layer before the classifier (null: linear on the mean)."""
    dropout: Dropout = 0.0
    """Dropout on the mean vector."""

    def build(self, info: DatasetInfo) -> Any:
        from torchkiln.text import nets

        return nets.EmbeddingBagNet(self, info)


@models.register
class RnnClassifier(TextModelConfig):
    """A recurrent classifier (RNN, LSTM or GRU) whose padding never changes a result."""

    name: Literal["rnn_classifier"] = "rnn_classifier"
    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    """Recurrent cell."""
    hidden_size: Width = 128
    """Hidden units per direction."""
    layers: Annotated[int, Field(ge=1, le=8)] = 1
    """Stacked recurrent layers."""
    bidirectional: bool = True
    """Read the text both ways."""
    dropout: Dropout = 0.2
    """Dropout on the embeddings, between layers and before the head."""
    pooling: Literal["last", "mean", "max"] = "max"
    """How the outputs become one vector: the final states, or the mean or max over the
    positions of each text (padding excluded)."""
    pack: bool | Literal["auto"] = "auto"
    """How padding is kept out: true runs packed sequences (`pack_padded_sequence`); false
    runs each direction once over the padded batch, the backward one on each text reversed
    within its length (exact too, and what exported files compute: packing is not
    exportable). `auto`: packed on CUDA (cuDNN runs packed batches natively), masks on the
    CPU, where packing falls back to a step-by-step loop (measured several times slower:
    benchmarks/rnn_paths.py)."""

    def build(self, info: DatasetInfo) -> Any:
        from torchkiln.text import nets

        return nets.RnnNet(self, info)


@models.register
class TransformerClassifier(TextModelConfig):
    """A Transformer encoder (nn.TransformerEncoder) with padding masks; CLS or mean pooling."""

    name: Literal["transformer_classifier"] = "transformer_classifier"
    heads: Annotated[int, Field(ge=1, le=64)] = 4
    """Attention heads (must divide embedding_dim)."""
    layers: Annotated[int, Field(ge=1, le=48)] = 2
    """Encoder layers."""
    feedforward: Width = 256
    """Width of each layer's feed-forward block."""
    dropout: Dropout = 0.1
    """Dropout inside the encoder and before the head."""
    positions: Literal["learned", "sinusoidal"] = "learned"
    """Position encoding: learned vectors, or the fixed sinusoids of the original paper."""
    pooling: Literal["cls", "mean"] = "mean"
    """`cls`: the output at a <cls> position (the dataset's `cls_token`, or else a learned
    vector the model puts first); `mean`: the mean over the text's positions."""
    norm_first: bool = True
    """Layer norm before attention and feed-forward (pre-LN; steadier from scratch)."""

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerClassifier:
        if self.embedding_dim % self.heads:
            raise ValueError(
                f"heads ({self.heads}) must divide embedding_dim ({self.embedding_dim})"
            )
        return self

    def build(self, info: DatasetInfo) -> Any:
        from torchkiln.text import nets

        return nets.TransformerNet(self, info)


@models.register
class TextCnn(TextModelConfig):
    """Kim's CNN for sentence classification: parallel 1-D convolutions, max over time."""

    name: Literal["text_cnn"] = "text_cnn"
    kernel_sizes: Annotated[list[Annotated[int, Field(ge=1, le=32)]], Field(min_length=1)] = Field(
        default_factory=lambda: [3, 4, 5]
    )
    """Widths (in tokens) of the convolution windows, one branch each."""
    filters: Width = 100
    """Feature maps per window width."""
    dropout: Dropout = 0.5
    """Dropout before the head."""

    def build(self, info: DatasetInfo) -> Any:
        from torchkiln.text import nets

        return nets.TextCnnNet(self, info)
