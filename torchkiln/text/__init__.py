"""Text classification components: tokenizers, datasets and models.

Importing the pack registers its light config modules (no torch) and declares its
run-time hooks lazily: the `text_tokens` dataset format (read by
`torchkiln.text.loading`) and the preprocessor of the "text" modality
(`torchkiln.text.preprocess`).
"""

from torchkiln.data.formats import register_format, register_predictor, register_preprocessor
from torchkiln.text import datasets, models, tokenizers

__all__ = ["datasets", "models", "tokenizers"]

register_format("text_tokens", "torchkiln.text.loading:read_text_tokens")
register_preprocessor("text", "torchkiln.text.preprocess:text_preprocessor")
register_predictor("text", "torchkiln.text.predict:predict_text")
