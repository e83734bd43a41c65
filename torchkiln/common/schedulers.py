"""Learning-rate schedulers. Each says whether it steps per epoch or per optimizer step
(`interval`); the ones whose schedule is counted in optimizer steps allow only "step".
Parameters keep torch's spelling (`T_max`), as the generic adapter's do."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt

from torchkiln.registry import SchedulerConfig, schedulers

Fraction = Annotated[float, Field(gt=0, lt=1)]


@schedulers.register
class StepLR(SchedulerConfig):
    """Multiply the learning rate by `gamma` every `step_size` epochs."""

    name: Literal["StepLR"] = "StepLR"
    step_size: PositiveInt = 10
    """Epochs between decays."""
    gamma: PositiveFloat = 0.1
    """Decay factor."""

    def build(self, optimizer: Any, steps_per_epoch: int, epochs: int, mode: str = "min") -> Any:
        import torch

        return torch.optim.lr_scheduler.StepLR(optimizer, self.step_size, self.gamma)


@schedulers.register
class CosineAnnealingLR(SchedulerConfig):
    """Cosine decay from the optimizer's learning rate to `eta_min` over `T_max` epochs."""

    name: Literal["CosineAnnealingLR"] = "CosineAnnealingLR"
    T_max: PositiveInt | None = None
    """Epochs (or optimizer steps, with `interval: step`) of one half cosine period
    (default: the whole training run)."""
    eta_min: NonNegativeFloat = 0.0
    """Final learning rate."""

    def build(self, optimizer: Any, steps_per_epoch: int, epochs: int, mode: str = "min") -> Any:
        import torch

        whole_run = epochs if self.interval == "epoch" else epochs * steps_per_epoch
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, self.T_max or whole_run, self.eta_min
        )


@schedulers.register
class OneCycleLR(SchedulerConfig):
    """The 1cycle policy: warm up to `max_lr`, then anneal far below it; steps every batch."""

    name: Literal["OneCycleLR"] = "OneCycleLR"
    interval: Literal["step"] = "step"
    """Stepped after every optimizer step (its schedule is counted in steps)."""
    max_lr: PositiveFloat | None = None
    """Peak learning rate (default: the optimizer's lr)."""
    pct_start: Fraction = 0.3
    """Fraction of the steps spent increasing the learning rate."""
    anneal_strategy: Literal["cos", "linear"] = "cos"
    """Shape of the annealing."""
    div_factor: PositiveFloat = 25.0
    """Initial lr = max_lr / div_factor."""
    final_div_factor: PositiveFloat = 1e4
    """Final lr = initial lr / final_div_factor."""

    def build(self, optimizer: Any, steps_per_epoch: int, epochs: int, mode: str = "min") -> Any:
        import torch

        max_lr = self.max_lr or optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=max_lr,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            pct_start=self.pct_start,
            anneal_strategy=self.anneal_strategy,
            div_factor=self.div_factor,
            final_div_factor=self.final_div_factor,
        )


@schedulers.register
class ReduceLROnPlateau(SchedulerConfig):
    """Cut the learning rate when the monitored validation value stops improving."""

    needs_metric: ClassVar[bool] = True
    name: Literal["ReduceLROnPlateau"] = "ReduceLROnPlateau"
    interval: Literal["epoch"] = "epoch"
    """Stepped after every epoch, with the monitored validation value."""
    factor: Fraction = 0.1
    """Multiply the learning rate by this on a plateau."""
    patience: Annotated[int, Field(ge=0)] = 5
    """Epochs without improvement before cutting."""
    threshold: NonNegativeFloat = 1e-4
    """Smallest change that counts as an improvement (relative)."""
    min_lr: NonNegativeFloat = 0.0
    """Never go below this learning rate."""

    def build(self, optimizer: Any, steps_per_epoch: int, epochs: int, mode: str = "min") -> Any:
        import torch

        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode=mode,
            factor=self.factor,
            patience=self.patience,
            threshold=self.threshold,
            min_lr=self.min_lr,
        )


@schedulers.register
class LinearWarmup(SchedulerConfig):
    """Linear warmup over `warmup_steps`, then constant, linear or cosine decay to the end."""

    name: Literal["linear_warmup"] = "linear_warmup"
    interval: Literal["step"] = "step"
    """Stepped after every optimizer step (its schedule is counted in steps)."""
    warmup_steps: Annotated[int, Field(ge=0)] = 100
    """Optimizer steps of linear warmup from `start_factor` x lr to lr."""
    start_factor: Annotated[float, Field(gt=0, le=1)] = 0.01
    """Fraction of the learning rate to start the warmup from."""
    decay: Literal["constant", "linear", "cosine"] = "cosine"
    """What follows the warmup, until the last step."""
    final_factor: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Fraction of the learning rate reached at the last step (linear or cosine decay)."""

    def factor(self, step: int, total: int) -> float:
        if step < self.warmup_steps:
            return self.start_factor + (1 - self.start_factor) * step / self.warmup_steps
        if self.decay == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, total - self.warmup_steps))
        shape = 1 - progress if self.decay == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        return self.final_factor + (1 - self.final_factor) * shape

    def build(self, optimizer: Any, steps_per_epoch: int, epochs: int, mode: str = "min") -> Any:
        import torch

        total = steps_per_epoch * epochs
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: self.factor(s, total))
