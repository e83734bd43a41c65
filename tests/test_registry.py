"""The Registry type, registry lookups with suggestions, the generic adapters and the catalog."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import ValidationError
from registry_state import restored_registries

from torchkiln.catalog import CATALOG_FILE, SECTIONS, catalog
from torchkiln.registry import (
    ALL_REGISTRIES,
    DuplicateNameError,
    ModelConfig,
    Registry,
    UnknownNameError,
    exporters,
    losses,
    models,
    optimizers,
    registered,
    schedulers,
    transforms,
)
from torchkiln.registry.registry import did_you_mean, suggest

# Every test runs inside `restored_registries()` (the autouse fixture in conftest.py): what
# a test registers here, a registry it creates included, is gone when it ends.


@pytest.fixture
def registry() -> Registry:
    """A fresh registry of a kind nobody else uses."""
    return Registry("widget", "Widgets for tests.")


def entry(name: str, module: str) -> type:
    """A registrable class called `name`, defined (as far as the registry can tell) in `module`."""
    return type(
        f"E_{name}",
        (),
        {"registry_name": classmethod(lambda cls: name), "__module__": module},
    )


# ---------------------------------------------------------------------- Registry


def test_register_get_names_iterate(registry: Registry) -> None:
    b = registry.register(entry("beta", "pkg.b"))
    a = registry.register(entry("alpha", "pkg.a"))
    assert registry.get("alpha") is a and registry.get("beta") is b
    assert registry.names() == ["alpha", "beta"]
    assert list(registry) == [("alpha", a), ("beta", b)]
    assert len(registry) == 2
    assert "alpha" in registry and "gamma" not in registry
    assert ALL_REGISTRIES[registry.kind] is registry
    assert repr(registry) == f"Registry({registry.kind!r}, 2 entries)"


def test_register_works_as_a_decorator(registry: Registry) -> None:
    @registry.register
    class Thing:
        @classmethod
        def registry_name(cls) -> str:
            return "thing"

    assert registry.get("thing") is Thing


def test_duplicate_registration_names_both_modules(registry: Registry) -> None:
    registry.register(entry("conv", "first_pack.models"))
    with pytest.raises(DuplicateNameError) as info:
        registry.register(entry("conv", "second_pack.layers"))
    message = str(info.value)
    assert f"{registry.kind} 'conv' is already registered by first_pack.models" in message
    assert "second_pack.layers cannot register it again" in message
    assert registry.get("conv").__module__ == "first_pack.models"  # the first one stays


def test_a_second_registry_of_the_same_kind_is_refused(registry: Registry) -> None:
    with pytest.raises(DuplicateNameError, match="already exists"):
        Registry(registry.kind, "again")


def test_unknown_name_lists_known_names_and_suggestions(registry: Registry) -> None:
    for name in ("resnet18", "resnet34", "resnet50", "vgg16", "mlp"):
        registry.register(entry(name, "pkg"))
    with pytest.raises(UnknownNameError) as info:
        registry.get("resnet")
    err = info.value
    assert (err.kind, err.name) == (registry.kind, "resnet")
    assert err.known == ["mlp", "resnet18", "resnet34", "resnet50", "vgg16"]
    text = str(err)
    assert text.startswith(f"unknown {registry.kind} 'resnet'; did you mean ")
    assert text.count("'resnet") == 4  # the name itself and three suggestions, no more
    assert text.endswith(f"known {registry.kind}s: mlp, resnet18, resnet34, resnet50, vgg16")
    assert isinstance(err, LookupError)


def test_unknown_name_without_close_match(registry: Registry) -> None:
    registry.register(entry("mlp", "pkg"))
    with pytest.raises(UnknownNameError) as info:
        registry.get("transformer")
    assert str(info.value) == f"unknown {registry.kind} 'transformer'; known {registry.kind}s: mlp"


def test_plural_of_kinds_in_messages() -> None:
    with pytest.raises(UnknownNameError, match="known losses: "):
        losses.get("CrossEntropy")
    with pytest.raises(UnknownNameError, match="known models: "):
        models.get("nope")


def test_long_name_lists_are_cut(registry: Registry) -> None:
    for i in range(50):
        registry.register(entry(f"n{i:02d}", "pkg"))
    with pytest.raises(UnknownNameError) as info:
        registry.get("zzz")
    assert str(info.value).endswith("n39, ... (10 more)")


def test_suggest_and_did_you_mean() -> None:
    choices = ["epochs", "batch_size", "optimizer", "AdamW", "Adam"]
    assert suggest("epoch", choices) == ["epochs"]
    assert suggest("adamw", choices)[0] == "AdamW"  # case-insensitive, best first
    assert suggest("xyz", choices) == []
    assert len(suggest("a", ["a", "aa", "aaa", "ab", "ba"])) == 3
    assert did_you_mean("epoch", choices) == "did you mean 'epochs'? "
    assert did_you_mean("Adamw", choices) == "did you mean 'AdamW' or 'Adam'? "
    assert did_you_mean("xyz", choices) == ""


def test_generic_adapter_answers_unregistered_names(registry: Registry) -> None:
    made = entry("made", "pkg")
    registry.set_generic(lambda name: made if name.startswith("Auto") else None, lambda: ["Auto1"])
    registry.register(entry("real", "pkg"))
    assert registry.get("AutoThing") is made
    assert "AutoThing" not in registry  # `in` means registered, not answerable
    assert registry.generic_names() == ["Auto1"]
    assert registry.known_names() == ["real", "Auto1"]
    with pytest.raises(UnknownNameError, match="did you mean 'Auto1'"):
        registry.get("Outo1")
    with pytest.raises(DuplicateNameError, match="already has a generic adapter"):
        registry.set_generic(lambda name: None, list)


# ---------------------------------------------------------------------- generic adapters


def test_registered_classes_win_over_the_generic_adapter() -> None:
    adamw = optimizers.get("AdamW")
    assert adamw.__module__ == "torchkiln.common.optim"
    assert "AdamW" not in optimizers.generic_names()
    assert set(optimizers.generic_names()) == set(catalog()["optimizer"]) - set(optimizers.names())


@pytest.mark.parametrize(
    ("registry", "data"),
    [
        (optimizers, {"name": "NAdam", "lr": 0.002, "momentum_decay": 0.004}),
        (optimizers, {"name": "Adagrad"}),
        (schedulers, {"name": "ExponentialLR", "gamma": 0.9}),
        (schedulers, {"name": "MultiStepLR", "milestones": [3, 6], "interval": "step"}),
        (losses, {"name": "HuberLoss", "delta": 0.5}),
        (losses, {"name": "MSELoss"}),
        (transforms, {"name": "Resize", "size": [32, 32]}),
        (transforms, {"name": "CenterCrop", "size": 24}),
    ],
)
def test_generic_adapter_accepts_catalog_kwargs(registry: Registry, data: dict) -> None:
    cls = registry.get(data["name"])
    config = cls.model_validate(data)
    assert config.name == data["name"]
    extra = {k: v for k, v in data.items() if k not in ("name", "interval")}
    assert config.kwargs() == {k: tuple(v) if isinstance(v, list) else v for k, v in extra.items()}


def test_generic_scheduler_interval_is_its_own_field() -> None:
    config = schedulers.get("MultiStepLR").model_validate(
        {"name": "MultiStepLR", "milestones": [3], "interval": "step"}
    )
    assert config.interval == "step"
    assert "interval" not in config.kwargs()
    with pytest.raises(ValidationError, match="Input should be 'epoch' or 'step'"):
        schedulers.get("MultiStepLR").model_validate(
            {"name": "MultiStepLR", "milestones": [3], "interval": "batch"}
        )


@pytest.mark.parametrize(
    ("registry", "data", "loc", "message"),
    [
        (optimizers, {"name": "NAdam", "lrr": 1}, ("lrr",), "NAdam has no parameter 'lrr'; "
         "did you mean 'lr'? its parameters: lr, betas, eps, weight_decay"),
        (schedulers, {"name": "ExponentialLR"}, ("gamma",), "ExponentialLR needs 'gamma'"),
        (schedulers, {"name": "CyclicLR", "max_lr": 1}, ("base_lr",), "CyclicLR needs 'base_lr'"),
        (losses, {"name": "HuberLoss", "delta": 1, "margin": 2}, ("margin",),
         "HuberLoss has no parameter 'margin'; its parameters: reduction, delta"),
        (transforms, {"name": "Resize"}, ("size",), "Resize needs 'size'"),
        (transforms, {"name": "Resize", "size": 8, "antialas": True}, ("antialas",),
         "did you mean 'antialias'?"),
    ],
)  # fmt: skip
def test_generic_adapter_checks_kwargs_against_the_catalog(
    registry: Registry, data: dict, loc: tuple, message: str
) -> None:
    cls = registry.get(data["name"])
    with pytest.raises(ValidationError) as info:
        cls.model_validate(data)
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [loc]
    assert message in errors[0]["msg"]


def test_generic_adapter_through_a_registered_field() -> None:
    """The way a spec reaches it: a field annotated `registered(registry)`, shorthand too."""
    marker = registered(optimizers)
    assert marker.validate("NAdam").name == "NAdam"
    assert marker.validate({"name": "Rprop", "lr": 0.1}).kwargs() == {"lr": 0.1}
    with pytest.raises(ValidationError, match="unknown optimizer 'Nadam'; did you mean 'NAdam'"):
        marker.validate({"name": "Nadam"})


def test_generic_classes_are_cached_and_named() -> None:
    assert optimizers.get("NAdam") is optimizers.get("NAdam")
    assert optimizers.get("NAdam").__name__ == "GenericOptimizer[NAdam]"


def test_validation_of_generic_components_imports_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from torchkiln.packs import load_builtins\n"
        "from torchkiln.registry import optimizers, schedulers, losses, transforms\n"
        "load_builtins()\n"
        "optimizers.get('NAdam').model_validate({'name': 'NAdam', 'lr': 0.1})\n"
        "schedulers.get('ExponentialLR').model_validate({'name': 'ExponentialLR', 'gamma': .9})\n"
        "losses.get('HuberLoss').model_validate({'name': 'HuberLoss'})\n"
        "transforms.get('Resize').model_validate({'name': 'Resize', 'size': 4})\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))\n"
        "assert not heavy, heavy[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------- plugins in-process


def test_a_plugin_component_validates_like_a_built_in(tmp_path, monkeypatch) -> None:
    from torchkiln.registry.plugins import load_plugin

    name = "plugin_net"
    (tmp_path / "net.py").write_text(
        "from typing import Literal\n"
        "from torchkiln.registry import ModelConfig, models\n\n"
        "@models.register\n"
        "class Net(ModelConfig):\n"
        f"    name: Literal[{name!r}] = {name!r}\n"
        "    width: int = 8\n\n"
        "    def build(self, info):\n"
        "        import torch.nn as nn\n\n"
        "        return nn.Linear(self.width, len(info.classes))\n"
    )
    monkeypatch.chdir(tmp_path)
    plugin = load_plugin("net.py", tmp_path)
    assert load_plugin("net.py", tmp_path) is plugin  # loaded once
    assert plugin.sources == ("net.py",)
    cls = models.get(name)
    assert issubclass(cls, ModelConfig)
    assert registered(models).validate({"name": name, "width": 3}).width == 3
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        registered(models).validate({"name": name, "widht": 3})


def test_model_config_example_from_the_docs() -> None:
    tag = "tiny_net"

    @models.register
    class TinyNet(ModelConfig):
        """Two linear layers."""

        name: Literal[tag] = tag  # type: ignore[valid-type]
        hidden: int = 32

        def build(self, info: Any) -> Any:
            import torch.nn as nn  # import torch inside build: validation stays torch-free

            return nn.Sequential(
                nn.Flatten(),
                nn.LazyLinear(self.hidden),
                nn.ReLU(),
                nn.LazyLinear(len(info.classes)),
            )

    assert models.get(tag) is TinyNet
    assert TinyNet.summary() == "Two linear layers."
    assert TinyNet.registry_name() == tag
    assert registered(models).validate(tag).hidden == 32


# ---------------------------------------------------------------------- the catalog


def test_catalog_sections_are_well_formed() -> None:
    data = catalog()
    assert set(data) == {*SECTIONS, "model"}
    for section, entries in data.items():
        assert entries, section
        for name, info in entries.items():
            assert set(info) == {"params", "required", "var_kwargs"}, (section, name)
            assert set(info["required"]) <= set(info["params"]), (section, name)
            supplied = SECTIONS.get(section, ("", ()))[1]
            assert not set(info["params"]) & set(supplied), (section, name)


def test_catalog_matches_the_installed_torch() -> None:
    """Regenerate the catalog from torch/torchvision (imports them) and compare."""
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from torchkiln.catalog.generate import build_catalog, dump

    fresh = build_catalog()
    if dump(fresh) == CATALOG_FILE.read_text(encoding="utf-8"):
        return
    shipped = catalog()
    changes = []
    for section in sorted(set(fresh) | set(shipped)):
        new, old = fresh.get(section, {}), shipped.get(section, {})
        changes += [f"{section}: new {n}" for n in sorted(set(new) - set(old))]
        changes += [f"{section}: gone {n}" for n in sorted(set(old) - set(new))]
        changes += [
            f"{section}: {n} changed" for n in sorted(set(new) & set(old)) if new[n] != old[n]
        ]
    import torch

    pytest.fail(
        f"torchkiln/catalog/torch_api.json is out of date for torch {torch.__version__}; "
        "run `python -m torchkiln.catalog` and review the diff. Changes:\n  "
        + "\n  ".join(changes[:40] or ["(formatting only)"])
    )


def test_a_component_without_its_kinds_methods_is_refused_when_it_registers() -> None:
    from torchkiln.registry.registry import IncompleteEntryError

    tag = "no_build"
    with pytest.raises(IncompleteEntryError) as caught:

        @models.register
        class NoBuild(ModelConfig):
            name: Literal[tag] = tag  # type: ignore[valid-type]

    assert f"model {tag!r}" in str(caught.value) and "does not implement build()" in str(
        caught.value
    )
    assert tag not in models


# ---------------------------------------------------------------------- no leaks between tests

LEAKY_PLUGIN = """\
from typing import Literal

from torchkiln.registry import ModelConfig, Registry, models

gadgets = Registry("gadget", "Only while the test runs.")


@models.register
class LeakyNet(ModelConfig):
    name: Literal["leaky_net"] = "leaky_net"

    def build(self, info):
        raise NotImplementedError
"""


def test_registrations_made_during_a_test_are_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the autouse fixture relies on: components, registry kinds, generic adapters and
    plugins registered inside `restored_registries()` are gone afterwards, and loading the
    same plugin again registers it again."""
    from torchkiln.registry.plugins import _by_key, load_plugin

    (tmp_path / "leaky.py").write_text(LEAKY_PLUGIN)
    monkeypatch.chdir(tmp_path)  # a plugin file must be inside the repository
    kinds, names = set(ALL_REGISTRIES), models.names()
    with restored_registries():
        plugin = load_plugin("leaky.py", tmp_path)
        models.register(entry("by_hand", "tests"))
        exporters.set_generic(lambda name: entry(name, "tests"), lambda: ["any"])
        assert "leaky_net" in models and "by_hand" in models and "gadget" in ALL_REGISTRIES
    assert set(ALL_REGISTRIES) == kinds and models.names() == names
    assert exporters.generic_names() == []  # the adapter is gone with the test
    with pytest.raises(UnknownNameError):
        exporters.get("any")
    assert plugin.module.__name__ not in sys.modules
    assert not [key for key in _by_key if key.endswith("leaky.py")]
    with pytest.raises(ValidationError, match="unknown model 'leaky_net'"):
        registered(models).validate({"name": "leaky_net"})
    with restored_registries():
        assert load_plugin("leaky.py", tmp_path) is not plugin
        assert "leaky_net" in models
    assert "leaky_net" not in models
