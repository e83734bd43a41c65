"""What a stage kind is: a config model, the artifact types it consumes and produces, a `run`.

A stage is a function of (its validated config, its input artifacts) -> its output
artifacts. It sees only its own block of the spec plus the top-level keys it declares
in `reads`; that is what lets DVC cache it honestly (`kiln dvc` lists exactly those
keys as the stage's params).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, NamedTuple

from pydantic import Field, StringConstraints

from torchkiln.registry.component import Config

if TYPE_CHECKING:  # pragma: no cover
    from torchkiln.registry.kinds import TaskConfig

STAGE_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
StageName = Annotated[str, StringConstraints(pattern=STAGE_NAME_PATTERN)]


class LocalPathMarker:
    """Marks a string field as a local file or folder the stage reads (a DVC dependency)."""


#: A path relative to the repository root (where `kiln` and `dvc` run).
LocalPath = Annotated[str, StringConstraints(min_length=1), LocalPathMarker()]


class ArtifactRef(Config):
    """Another pipeline's stage output, e.g. `{pipeline: mnist_cnn, stage: train}`.

    `kiln dvc` turns it into a dependency on that stage's output folder, so retraining
    the upstream model reruns whatever uses it.
    """

    pipeline: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+$")]
    """Name of the pipeline that produces the artifact."""
    stage: StageName
    """Stage of that pipeline whose output folder is used."""

    def path(self) -> str:
        return f"runs/{self.pipeline}/{self.stage}/out"


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


@dataclass
class StageContext:
    """Everything a running stage may use: its config, the keys it reads, its paths."""

    pipeline: str
    stage: str
    config: Any
    seed: int
    task: TaskConfig
    device: str
    inputs: dict[str, Path]
    out_dir: Path
    metrics_path: Path
    plots_dir: Path
    scratch_dir: Path
    #: sha256 of the whole validated spec; given only to kinds that read "*" (export's card)
    spec_digest: str = ""

    def input(self, slot: str) -> Path:
        return self.inputs[slot]

    def optional_input(self, slot: str) -> Path | None:
        return self.inputs.get(slot)


@dataclass
class GraphFacts:
    """What validation knows about each stage's output before anything runs."""

    task: TaskConfig
    by_stage: dict[str, dict[str, Any]] = field(default_factory=dict)


class StageKind:
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
    def output_facts(cls, config: Any, inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """What can be known about the output at validation time (e.g. its modality)."""
        return dict(inputs.get("dataset", {}))

    @classmethod
    def check(
        cls, config: Any, inputs: dict[str, dict[str, Any]], facts: GraphFacts
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """Cross-stage checks; returns (location within the stage block, message) pairs."""
        return []

    @classmethod
    def plot_specs(cls, config: Any, inputs: dict[str, dict[str, Any]]) -> tuple[PlotSpec, ...]:
        """The plot files this stage writes for this config (DVC must be told exactly)."""
        return cls.plots

    def run(self, ctx: StageContext) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
