"""Dataset artifact formats: name -> the reader of one split, as a lazy `module:function`.

Packs register their layouts in their light `__init__` (the text pack adds one), so
stages find the reader without importing every pack's torch code up front.
"""

from __future__ import annotations

import importlib
from typing import Any

FORMATS: dict[str, str] = {"tensors": "torchkiln.runtime.datasets:read_tensors"}


def register_format(name: str, target: str) -> None:
    """Declare that split reader `target` ("package.module:function") reads format `name`."""
    if FORMATS.get(name, target) != target:
        raise ValueError(f"dataset format {name!r} is already registered to {FORMATS[name]}")
    FORMATS[name] = target


def reader(name: str) -> Any | None:
    target = FORMATS.get(name)
    if target is None:
        return None
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


#: modality -> factory of the preprocessor that turns a batch's stored inputs into model inputs
PREPROCESSORS: dict[str, str] = {"image": "torchkiln.runtime.preprocess:image_preprocessor"}


def register_preprocessor(modality: str, target: str) -> None:
    """Declare the factory (`module:function`) of the preprocessor for a modality."""
    if PREPROCESSORS.get(modality, target) != target:
        raise ValueError(
            f"modality {modality!r} already has preprocessor {PREPROCESSORS[modality]}"
        )
    PREPROCESSORS[modality] = target


def preprocessor_factory(modality: str) -> Any:
    target = PREPROCESSORS.get(modality)
    if target is None:
        raise LookupError(f"no preprocessor for modality {modality!r}")
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


#: An exported model's input modality (its card's `input.modality`) -> what `kiln predict`
#: runs it with, "module:function", called as `predictor(args, folder, card, format, path)`
#: (the command's arguments, the export folder, its model card, the chosen file) and
#: returning the exit code.
PREDICTORS: dict[str, str] = {}


def register_predictor(modality: str, target: str) -> None:
    """Declare the `kiln predict` runner (`module:function`) of a modality's exports."""
    if PREDICTORS.get(modality, target) != target:
        raise ValueError(f"modality {modality!r} already has predictor {PREDICTORS[modality]}")
    PREDICTORS[modality] = target


def predictor(modality: str) -> Any | None:
    target = PREDICTORS.get(modality)
    if target is None:
        return None
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)
