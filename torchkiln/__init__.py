"""torchkiln: declarative, reproducible PyTorch pipelines compiled into DVC stages."""

__version__ = "0.1.0"
