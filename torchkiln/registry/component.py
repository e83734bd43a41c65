"""Config models, registered components, and the field type that picks a component by `name`.

A component is a Pydantic model tagged by `name: Literal["x"]` whose fields are its
parameters; a registry holds it. A field typed `Annotated[Base, registered(reg)]`
validates a mapping by looking its `name` up in `reg` *at validation time*, so a
plugin's component (registered after this module was imported) validates exactly like
a built-in one, and errors name only the chosen variant's fields. A bare string is
shorthand for `{name: <string>}`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError, core_schema

from torchkiln.registry.registry import Registry, UnknownNameError, article


class Config(BaseModel):
    """Base of every spec model: unknown keys are errors, no lax coercion, no NaN."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        allow_inf_nan=False,
        use_attribute_docstrings=True,
        validate_default=False,
    )


class Component(Config):
    """A registered, named, buildable thing: a model, an optimizer, a dataset..."""

    name: str

    #: What the component is for, in `kiln list`; defaults to the docstring's first line.
    summary_text: ClassVar[str | None] = None

    @classmethod
    def registry_name(cls) -> str:
        return cls.model_fields["name"].default

    @classmethod
    def summary(cls) -> str:
        if cls.summary_text:
            return cls.summary_text
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def _error(kind: str, message: str, loc: tuple[str | int, ...], value: Any) -> ValidationError:
    return ValidationError.from_exception_data(
        "component",
        [{"type": PydanticCustomError(kind, message), "loc": loc, "input": value}],
    )


class registered:
    """Annotation marker: validate the field as whichever `registry` entry its `name` picks."""

    def __init__(self, registry: Registry[Any]) -> None:
        self.registry = registry

    def validate(self, value: Any) -> Any:
        reg = self.registry
        if isinstance(value, Component) and value.name in reg:
            return value
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "component_type",
                f"expected {article(reg.kind)} name or a mapping with a 'name' key",
            )
        name = value.get("name")
        if name is None:
            raise PydanticCustomError(
                "missing_name", f"missing 'name': which {reg.kind}? choose one of {_short(reg)}"
            )
        if not isinstance(name, str):
            raise _error("name_type", f"{article(reg.kind)} name must be a string", ("name",), name)
        try:
            cls = reg.get(name)
        except UnknownNameError as exc:
            raise _error("unknown_name", str(exc), ("name",), name) from exc
        return cls.model_validate(value)

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self.validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda v: v.model_dump(mode="json") if isinstance(v, BaseModel) else v
            ),
        )

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        variants = []
        for _, cls in self.registry:
            ref = handler(cls.__pydantic_core_schema__)
            target = handler.resolve_ref_schema(ref)  # the shared definition: mark `name` required
            target["required"] = sorted({"name", *target.get("required", [])})
            variants.append(ref)
        generic = self.registry.generic_names()
        if generic:
            variants.append(
                {
                    "type": "object",
                    "title": f"any other {self.registry.kind} (generic adapter)",
                    "properties": {"name": {"enum": generic}},
                    "required": ["name"],
                }
            )
        names = [n for n, _ in self.registry] + generic
        return {
            "anyOf": [{"type": "string", "enum": names}, {"oneOf": variants}],
            "description": self.registry.doc,
        }


def _short(reg: Registry[Any]) -> str:
    names = reg.names()
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
