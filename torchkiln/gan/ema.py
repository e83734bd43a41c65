"""An exponential moving average of a module's weights (the generator's, in train_gan)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class Ema:
    """shadow <- d * shadow + (1 - d) * weights after every update, with the usual warm-up
    d_t = min(decay, (1 + t) / (10 + t)) so early averages are not dominated by the random
    initialisation. Buffers (BatchNorm running statistics) are copied, not averaged."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = copy.deepcopy(module).eval()
        self.shadow.requires_grad_(False)

    def rate(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        d = self.rate()
        shadow = list(self.shadow.parameters())
        live = [p.detach() for p in module.parameters()]
        torch._foreach_lerp_(shadow, live, 1.0 - d)
        for mine, theirs in zip(self.shadow.buffers(), module.buffers(), strict=True):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shadow.load_state_dict(state["shadow"])
        self.updates = int(state["updates"])
