"""Field types a spec's configs use: local paths (DVC dependencies), other pipelines'
outputs, and the names of pipelines and stages. Light: no torch, no spec loading."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from torchkiln.layout import stage_out
from torchkiln.registry.component import Config

PIPELINE_NAME_PATTERN = r"^[a-z0-9_]+$"
STAGE_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
PipelineName = Annotated[str, StringConstraints(pattern=PIPELINE_NAME_PATTERN)]
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

    pipeline: PipelineName
    """Name of the pipeline that produces the artifact."""
    stage: StageName
    """Stage of that pipeline whose output folder is used."""

    def path(self) -> str:
        return stage_out(self.pipeline, self.stage)
