"""What a stage kind is: a config model, the artifact types it consumes and produces, a `run`.

A stage is a function of (its validated config, its input artifacts) -> its output
artifacts. It sees only its own block of the spec plus the top-level keys it declares
in `reads`; that is what lets DVC cache it honestly (`kiln dvc` lists exactly those
keys as the stage's params). At run time it gets a `runtime.context.StageContext`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, cast

from pydantic import Field

from torchkiln.registry import kinds
from torchkiln.registry.component import Config
from torchkiln.schemas.fields import StageName

if TYPE_CHECKING:  # pragma: no cover
    from torchkiln.registry.kinds import TaskConfig
    from torchkiln.runtime.context import StageContext
    from torchkiln.stages.distributed import DistributedConfig

#: (location within the stage block, message) pairs from a kind's cross-stage `check()`
Problems = list[tuple[tuple[str | int, ...], str]]


class StageConfig(Config):
    """Fields every stage has. Each stage kind extends this with its own settings."""

    uses: str | None = None
    """Registered stage kind to run, when the stage's key is not itself a kind name."""
    inputs: dict[str, StageName] = Field(default_factory=dict)
    """Which stage feeds each input slot, e.g. `{model: pretrain}`; needed only when
    more than one stage could."""


class Slot(NamedTuple):
    """An input of a stage kind: the artifact type it takes, and whether it may be absent."""

    artifact: str
    optional: bool = False


class PlotSpec(NamedTuple):
    """A plot file a stage writes under its plots folder, with its DVC plot settings."""

    file: str
    x: str | None = None
    y: tuple[str, ...] = ()
    template: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class Facts:
    """What validation knows about an artifact before anything runs (None: not known).

    A kind's `output_facts` passes on what its inputs told it and adds what it makes."""

    #: what the examples are: "image", "text", ...
    modality: str | None = None
    #: whether the dataset has a validation split
    has_val: bool | None = None
    #: the registered name of the model the artifact holds or was built from
    model: str | None = None


NO_FACTS = Facts()


@dataclass
class GraphFacts:
    """What validation knows about each stage's output, and the pipeline's task."""

    task: TaskConfig
    #: the spec's `device:` (auto, cpu, cuda, cuda:N, mps)
    device: str = "auto"
    by_stage: dict[str, Facts] = field(default_factory=dict)


class StageKind(ABC):
    """A registered stage kind. Subclasses set the class attributes and implement `run`."""

    name: ClassVar[str]
    config: ClassVar[type[StageConfig]]
    consumes: ClassVar[dict[str, Slot]] = {}
    produces: ClassVar[str]
    #: Top-level spec keys the stage reads besides its own block; "*" means the whole spec
    #: (DVC then tracks every parameter of the file for this stage).
    reads: ClassVar[tuple[str, ...]] = ("seed", "task")
    #: Whether the stage writes `metrics.json` for `dvc metrics`.
    writes_metrics: ClassVar[bool] = False
    plots: ClassVar[tuple[PlotSpec, ...]] = ()
    #: Tasks the kind serves; None means any.
    tasks: ClassVar[frozenset[str] | None] = None

    @classmethod
    def registry_name(cls) -> str:
        return cls.name

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def output_facts(cls, config: Any, inputs: Mapping[str, Facts]) -> Facts:
        """What can be known about the output at validation time (e.g. its modality)."""
        return inputs.get("dataset", NO_FACTS)

    @classmethod
    def check(cls, config: Any, inputs: Mapping[str, Facts], facts: GraphFacts) -> Problems:
        """Cross-stage checks; returns (location within the stage block, message) pairs."""
        return []

    @classmethod
    def plot_specs(cls, config: Any, inputs: Mapping[str, Facts]) -> tuple[PlotSpec, ...]:
        """The plot files this stage writes for this config (DVC must be told exactly)."""
        return cls.plots

    @classmethod
    def distributed(cls, config: Any) -> DistributedConfig | None:
        """The stage's `distributed:` settings when it can train on several processes (the
        runner then starts them), else None."""
        return None

    @abstractmethod
    def run(self, ctx: StageContext) -> None:
        """Do the work: read `ctx.inputs`, write `ctx.out_dir` (and metrics, plots). Import
        run-time code (torch) here, not at module level: validation imports every kind."""


class ModelStageKind(StageKind):
    """A kind that takes a dataset, a model and (optionally) the augment stage's transforms:
    train, evaluate and their GAN counterparts. `model_artifact` says which model artifact
    (`model` from build_model, `trained_model` from train)."""

    model_artifact: ClassVar[str] = "model"
    reads = ("seed", "task", "device", "deterministic")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.consumes = {
            "dataset": Slot("dataset"),
            "model": Slot(cls.model_artifact),
            "transforms": Slot("transforms", optional=True),
        }

    @classmethod
    def output_facts(cls, config: Any, inputs: Mapping[str, Facts]) -> Facts:
        return inputs.get("model", NO_FACTS)


def stage_kind(name: str) -> type[StageKind]:
    """The registered stage kind `name` (typed access to `registry.kinds.stages`)."""
    return cast("type[StageKind]", kinds.stages.get(name))
