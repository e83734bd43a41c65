"""GAN scores and convergence checks (imports torch; no model-specific code).

- `frechet_distance`: between Gaussians fitted to two feature sets (FID's formula, in the
  feature space of any classifier, here the one another pipeline trained).
- `class_diversity`: entropy of the predicted-class histogram, 0 (one class) .. 1 (uniform).
- `classifier_score`: exp E[KL(p(y|x) || p(y))] (the Inception Score's formula).
- `mode_collapse` / `divergence`: warnings from scores and from the training history.
- `FeatureTap`: the input of a classifier's last linear layer (its penultimate features),
  read with a forward hook, so any classifier with a linear head works unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def _gaussian(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = features.to(torch.float64)
    mu = x.mean(dim=0)
    centred = x - mu
    sigma = centred.T @ centred / max(x.shape[0] - 1, 1)
    return mu, sigma


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) for N x D feature sets.

    Tr((S_a S_b)^(1/2)) is computed as the trace of the square root of the symmetric
    S_a^(1/2) S_b S_a^(1/2) (same eigenvalues), in float64: no complex parts to discard."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be N x D with equal D: {a.shape} vs {b.shape}")
    mu_a, s_a = _gaussian(a)
    mu_b, s_b = _gaussian(b)
    root_a = _sqrt_psd(s_a)
    middle = root_a @ s_b @ root_a
    eig = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0)
    value = float(((mu_a - mu_b) ** 2).sum() + s_a.trace() + s_b.trace() - 2 * eig.sqrt().sum())
    return max(value, 0.0)


def feature_spread(features: torch.Tensor) -> float:
    """Total variance (trace of the covariance) of a feature set."""
    return float(_gaussian(features)[1].trace())


def class_shares(predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    counts = torch.bincount(predicted.flatten().long(), minlength=num_classes).double()
    return counts / counts.sum().clamp_min(1)


def class_diversity(predicted: torch.Tensor, num_classes: int) -> float:
    """Entropy of the predicted-class histogram divided by log(num_classes): 0 when every
    image gets the same class, 1 when the classes are equally frequent."""
    if num_classes < 2:
        return 0.0
    p = class_shares(predicted, num_classes)
    p = p[p > 0]
    return max(0.0, float(-(p * p.log()).sum() / math.log(num_classes)))  # never -0.0


def classifier_score(probabilities: torch.Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))): 1 (uninformative) .. num_classes (confident and varied)."""
    p = probabilities.to(torch.float64).clamp_min(1e-12)
    marginal = p.mean(dim=0, keepdim=True)
    return float((p * (p.log() - marginal.log())).sum(dim=1).mean().exp())


def mode_collapse(
    diversity: float,
    real_diversity: float,
    spread: float,
    real_spread: float,
    *,
    diversity_ratio: float,
    spread_ratio: float,
) -> list[str]:
    """Warnings for too little variety: across classes (diversity) or within (spread)."""
    found = []
    if real_diversity > 0 and diversity < diversity_ratio * real_diversity:
        found.append(
            f"mode collapse: the generated images' class diversity {diversity:.3f} is below "
            f"{diversity_ratio:g} x the real images' {real_diversity:.3f} (some classes are "
            "rarely or never generated)"
        )
    if real_spread > 0 and spread < spread_ratio * real_spread:
        found.append(
            f"mode collapse: the generated images' feature spread is {spread / real_spread:.2f} "
            f"of the real images' (below {spread_ratio:g}): the samples look alike"
        )
    return found


def divergence(
    history: Sequence[dict[str, Any]], *, d_loss_floor: float, g_loss_rise: float, window: int
) -> list[str]:
    """Warnings for a discriminator that has won: over `window` consecutive epochs its loss
    stays below `d_loss_floor` while the generator loss rises by `g_loss_rise` or more."""
    d = [float(r["d_loss"]) for r in history]
    g = [float(r["g_loss"]) for r in history]
    for start in range(0, len(history) - window + 1):
        end = start + window
        if max(d[start:end]) >= d_loss_floor:
            continue
        first, last = g[start], g[end - 1]
        if first > 0 and last >= g_loss_rise * first:
            epoch = history[start].get("epoch", start + 1)
            return [
                f"divergence: from epoch {epoch} the discriminator loss stays below "
                f"{d_loss_floor:g} while the generator loss climbs {first:.2f} -> {last:.2f}; "
                "the discriminator has won. Try label smoothing, a lower discriminator lr, "
                "dropout or spectral norm in D, or the hinge loss"
            ]
    return []


class FeatureTap:
    """Reads the input of a module's last `nn.Linear` on every forward (its penultimate-layer
    features); falls back to the output (logits) when the model has no linear layer."""

    def __init__(self, model: nn.Module, use_logits: bool = False) -> None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self.features: torch.Tensor | None = None
        self.handle = None
        self.layer = "logits"
        if linears and not use_logits:
            last = linears[-1]
            self.layer = "input of " + next(n for n, m in model.named_modules() if m is last)
            self.handle = last.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.features = args[0].detach().flatten(1)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.handle is None:
            return logits.detach().flatten(1)
        assert self.features is not None
        return self.features

    def close(self) -> None:
        if self.handle is not None:
            self.handle.remove()
