"""Components every task shares: optimizers, schedulers, losses, metrics, exporters, tasks.

The pack also answers, through one generic adapter, any `torch.optim` optimizer, any
learning-rate scheduler and any `torch.nn` loss that has no config class of its own.
"""

from torchkiln.common import exporters, losses, metrics, optim, schedulers, tasks
from torchkiln.common.generic import install_generic
from torchkiln.registry import kinds

__all__ = ["exporters", "losses", "metrics", "optim", "schedulers", "tasks"]

install_generic(kinds.optimizers, "optimizer")
install_generic(kinds.schedulers, "scheduler")
install_generic(kinds.losses, "loss")
