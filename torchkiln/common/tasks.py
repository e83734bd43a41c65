"""Task families. A task may pick the default stage kind for a stage key."""

from __future__ import annotations

from typing import ClassVar, Literal

from torchkiln.registry import TaskConfig, tasks


@tasks.register
class Classification(TaskConfig):
    """Predict one class per example (images or text)."""

    name: Literal["classification"] = "classification"
    stage_defaults: ClassVar[dict[str, str]] = {}
