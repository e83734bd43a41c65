"""Build the torch API catalog by inspecting the installed torch (imports torch)."""

from __future__ import annotations

import importlib
import inspect
import json
from typing import Any

from torchkiln.catalog import SECTIONS

#: Classes a YAML spec cannot drive: they take callables, tensors or other transform objects,
#: need a closure, or act on boxes and key points rather than images.
EXCLUDED = {
    "optimizer": {"LBFGS"},
    "scheduler": {"LambdaLR", "MultiplicativeLR", "ChainedScheduler", "SequentialLR"},
    "loss": {"AdaptiveLogSoftmaxWithLoss"},
    "transform": {
        "Lambda",
        "Compose",
        "RandomApply",
        "RandomChoice",
        "RandomOrder",
        "LinearTransformation",
        "ToPILImage",
        "PILToTensor",
        "ToTensor",
        "ToImage",
        "ToPureTensor",
        "FiveCrop",
        "TenCrop",
        "ClampBoundingBoxes",
        "ClampKeyPoints",
        "ConvertBoundingBoxFormat",
        "SanitizeBoundingBoxes",
        "SanitizeKeyPoints",
        "SetClampingMode",
        "RandomIoUCrop",
        "CutMix",
        "MixUp",
    },
}


def _is_member(section: str, name: str, obj: Any) -> bool:
    import torch

    if not inspect.isclass(obj) or name.startswith("_") or name in EXCLUDED[section]:
        return False
    if section == "optimizer":
        return issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer
    if section == "scheduler":
        base = torch.optim.lr_scheduler.LRScheduler
        bases = (base, torch.optim.lr_scheduler.ReduceLROnPlateau)
        return issubclass(obj, bases) and obj not in (base, torch.optim.lr_scheduler._LRScheduler)
    if section == "loss":
        return issubclass(obj, torch.nn.Module) and name.endswith("Loss")
    if section == "transform":
        from torchvision.transforms.v2 import Transform

        return issubclass(obj, Transform) and obj is not Transform
    raise ValueError(section)


def describe(cls: type, supplied: tuple[str, ...]) -> dict[str, Any]:
    params, required, var_kwargs = [], [], False
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind is p.VAR_KEYWORD:
            var_kwargs = True
            continue
        if p.kind is p.VAR_POSITIONAL or p.name in supplied:
            continue
        params.append(p.name)
        if p.default is p.empty:
            required.append(p.name)
    return {"params": params, "required": required, "var_kwargs": var_kwargs}


def torchvision_models() -> dict[str, dict[str, Any]]:
    """Classification model builders in torchvision, as `torchvision/<name>`."""
    import torchvision.models

    names = torchvision.models.list_models(module=torchvision.models)
    return {f"torchvision/{n}": {"params": [], "required": [], "var_kwargs": True} for n in names}


def build_catalog() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"model": torchvision_models()}
    for section, (module_name, supplied, _) in SECTIONS.items():
        module = importlib.import_module(module_name)
        out[section] = {
            name: describe(obj, supplied)
            for name, obj in sorted(vars(module).items())
            if _is_member(section, name, obj)
        }
    return out


def dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"
