"""Components every task shares: optimizers, schedulers, losses, metrics, exporters, tasks."""

from torchkiln.common import exporters, losses, metrics, optim, schedulers, tasks

__all__ = ["exporters", "losses", "metrics", "optim", "schedulers", "tasks"]
