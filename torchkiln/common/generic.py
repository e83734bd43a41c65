"""One adapter for the long tail of torch classes: any optimizer, scheduler, loss or v2 transform.

`{name: NAdam, lr: 0.002, momentum_decay: 0.004}` validates against the shipped
catalog (parameter names, required parameters) without importing torch; at run time
the keyword arguments go to the real class. The common classes have real config
models with types and bounds instead (see optim.py, losses.py, vision/transforms.py).
"""

from __future__ import annotations

import importlib
import math
from functools import cache
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, ValidationError, create_model, model_validator
from pydantic_core import PydanticCustomError

from torchkiln.catalog import SECTIONS, section
from torchkiln.registry.kinds import (
    LossConfig,
    OptimizerConfig,
    SchedulerConfig,
    TransformConfig,
)
from torchkiln.registry.registry import Registry, did_you_mean


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value) or math.isinf(value)
    if isinstance(value, list | dict):
        items = value.values() if isinstance(value, dict) else value
        return any(_non_finite(v) for v in items)
    return False


class _Generic:
    """Mixin: extra keys are the class's keyword arguments, checked against the catalog."""

    catalog_kind: ClassVar[str]
    #: Keys the adapter itself declares as fields (not passed to the torch class).
    own_keys: ClassVar[frozenset[str]] = frozenset({"name"})

    @model_validator(mode="before")
    @classmethod
    def _check_kwargs(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        entry = section(cls.catalog_kind)[data["name"]]
        params = entry["params"]
        errors = []
        for key in data:
            if key in cls.own_keys or key in params or entry["var_kwargs"]:
                continue
            msg = (
                f"{data['name']} has no parameter {key!r}; {did_you_mean(key, params)}"
                f"its parameters: {', '.join(params) or '(none)'}"
            )
            errors.append({"type": PydanticCustomError("unknown_param", msg), "loc": (key,)})
        for key, value in data.items():
            if _non_finite(value):
                msg = f"{key} must be a finite number (got {value})"
                errors.append({"type": PydanticCustomError("finite_number", msg), "loc": (key,)})
        for key in entry["required"]:
            if key not in data:
                msg = f"{data['name']} needs {key!r}"
                errors.append({"type": PydanticCustomError("missing", msg), "loc": (key,)})
        if errors:
            line_errors = [{**e, "input": data.get(e["loc"][0])} for e in errors]
            raise ValidationError.from_exception_data(cls.__name__, line_errors)
        return data

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments for the torch class (lists become tuples, as torch expects)."""
        extra = self.model_extra or {}  # type: ignore[attr-defined]
        return {k: tuple(v) if isinstance(v, list) else v for k, v in extra.items()}

    def torch_class(self) -> type:
        module = importlib.import_module(SECTIONS[self.catalog_kind][0])
        return getattr(module, self.name)  # type: ignore[attr-defined]


_ALLOW = ConfigDict(extra="allow")


class GenericOptimizer(_Generic, OptimizerConfig):
    """Any torch.optim optimizer by class name."""

    model_config = _ALLOW
    catalog_kind: ClassVar[str] = "optimizer"

    def build(self, params: Any) -> Any:
        return self.torch_class()(params, **self.kwargs())


class GenericScheduler(_Generic, SchedulerConfig):
    """Any torch.optim.lr_scheduler class by name, stepped once per epoch unless told otherwise."""

    model_config = _ALLOW
    catalog_kind: ClassVar[str] = "scheduler"
    own_keys: ClassVar[frozenset[str]] = frozenset({"name", "interval"})

    def build(self, optimizer: Any, steps_per_epoch: int, epochs: int, mode: str = "min") -> Any:
        return self.torch_class()(optimizer, **self.kwargs())


class GenericLoss(_Generic, LossConfig):
    """Any torch.nn loss by class name."""

    model_config = _ALLOW
    catalog_kind: ClassVar[str] = "loss"

    def build(self, info: Any) -> Any:
        return self.torch_class()(**self.kwargs())


class GenericTransform(_Generic, TransformConfig):
    """Any torchvision.transforms.v2 transform by class name."""

    model_config = _ALLOW
    catalog_kind: ClassVar[str] = "transform"

    def build(self) -> Any:
        return self.torch_class()(**self.kwargs())


_BASES: dict[str, type] = {
    "optimizer": GenericOptimizer,
    "scheduler": GenericScheduler,
    "loss": GenericLoss,
    "transform": GenericTransform,
}


@cache
def generic_component(kind: str, name: str) -> type | None:
    """A config class for catalog entry `name` of `kind`, or None when the catalog lacks it."""
    if name not in section(kind):
        return None
    base = _BASES[kind]
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{base.__name__}[{name}]",
        __base__=base,
        __module__=__name__,
        name=(Literal[name], name),
    )


def install_generic(registry: Registry[Any], kind: str) -> None:
    """Let `registry` answer every catalog class of `kind` that nobody registered."""
    registry.set_generic(lambda name: generic_component(kind, name), lambda: list(section(kind)))
