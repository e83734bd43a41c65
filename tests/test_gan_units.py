"""GAN building blocks without a pipeline: losses, n_critic scheduling, the EMA, the scores
(Fréchet distance, diversity, classifier score), the convergence detectors, the models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchkiln.data.info import DatasetInfo
from torchkiln.gan.ema import Ema
from torchkiln.gan.losses import Hinge, NonSaturatingBce, WganGp
from torchkiln.gan.metrics import (
    FeatureTap,
    class_diversity,
    classifier_score,
    divergence,
    frechet_distance,
    mode_collapse,
)
from torchkiln.gan.models import Dcgan, MlpGan
from torchkiln.gan.objectives import gradient_penalty
from torchkiln.gan.train import contact_sheet, critic_steps


def info(shape: tuple[int, ...] = (1, 28, 28)) -> DatasetInfo:
    return DatasetInfo("image", "gan", tuple("0123456789"), shape, {"train": 10})


# -- losses ------------------------------------------------------------------------------


def test_bce_loss_matches_binary_cross_entropy_and_smooths_one_side() -> None:
    real, fake = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-3.0, 0.2, 1.0])
    bce = nn.functional.binary_cross_entropy_with_logits
    obj = NonSaturatingBce().build()
    want = bce(real, torch.ones(3)) + bce(fake, torch.zeros(3))
    assert torch.allclose(obj.discriminator_loss(real, fake), want)
    assert torch.allclose(obj.generator_loss(fake), bce(fake, torch.ones(3)))
    smooth = NonSaturatingBce(label_smoothing=0.1).build()
    want = bce(real, torch.full((3,), 0.9)) + bce(fake, torch.zeros(3))  # fakes keep target 0
    assert torch.allclose(smooth.discriminator_loss(real, fake), want)
    assert torch.allclose(obj.score(torch.zeros(2)), torch.full((2,), 0.5))


def test_hinge_loss() -> None:
    obj = Hinge().build()
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # relu(1 - real) = [0, 0.5] -> 0.25; relu(1 + fake) = [0, 1] -> 0.5
    assert obj.discriminator_loss(real, fake).item() == pytest.approx(0.75)
    assert obj.generator_loss(fake).item() == pytest.approx(1.0)


def test_wgan_gp_penalty_is_zero_for_unit_gradient_and_positive_otherwise() -> None:
    real, fake = torch.randn(16, 3), torch.randn(16, 3)
    unit = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        unit.weight.copy_(torch.tensor([[0.6, 0.8, 0.0]]))  # ||grad|| = 1 everywhere
    assert gradient_penalty(lambda x: unit(x).squeeze(1), real, fake).item() == pytest.approx(
        0.0, abs=1e-10
    )
    with torch.no_grad():
        unit.weight.mul_(3.0)  # ||grad|| = 3: penalty (3 - 1)^2 = 4
    assert gradient_penalty(lambda x: unit(x).squeeze(1), real, fake).item() == pytest.approx(4.0)
    obj = WganGp(gp_weight=10.0).build()
    assert obj.penalty(lambda x: unit(x).squeeze(1), real, fake).item() == pytest.approx(40.0)
    assert obj.discriminator_loss(torch.tensor([1.0]), torch.tensor([-1.0])).item() == -2.0
    # the penalty is differentiable w.r.t. D's weights (it trains the critic)
    gradient_penalty(lambda x: unit(x).squeeze(1), real, fake).backward()
    assert unit.weight.grad is not None and unit.weight.grad.abs().sum() > 0


def test_n_critic_schedules_one_generator_step_per_n_discriminator_steps() -> None:
    assert [critic_steps(s, 1) for s in range(3)] == [True, True, True]
    assert [s for s in range(12) if critic_steps(s, 5)] == [4, 9]
    # counted over the whole run, so epoch boundaries (and resuming) do not reset it
    assert sum(critic_steps(s, 3) for s in range(7, 13)) == 2


# -- EMA ---------------------------------------------------------------------------------


def test_ema_follows_the_weights_with_warm_up_and_copies_buffers() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = Ema(net, decay=0.9)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.fill_(5.0)
    ema.update(net)  # t = 1: rate min(0.9, 2 / 11)
    d = 2 / 11
    assert torch.allclose(ema.shadow[0].weight, d * start + (1 - d) * (start + 1))
    assert torch.equal(ema.shadow[1].running_mean, torch.full((2,), 5.0))
    for _ in range(100):
        ema.update(net)
    assert ema.rate() == 0.9
    assert torch.allclose(ema.shadow[0].weight, net[0].weight, atol=1e-3)
    assert not any(p.requires_grad for p in ema.shadow.parameters())
    copy = Ema(net, decay=0.9)
    copy.load_state_dict(ema.state_dict())
    assert copy.updates == ema.updates
    assert torch.equal(copy.shadow[0].weight, ema.shadow[0].weight)


# -- scores ------------------------------------------------------------------------------


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_a_shift() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 8, generator=gen)
    a = a - a.mean(dim=0)  # exactly centred, so scaling keeps the mean
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    b = a + 2.0  # mean shift only: ||mu||^2 = 8 * 4
    assert frechet_distance(a, b) == pytest.approx(32.0, rel=1e-6)
    c = a * 3.0  # same mean, covariance 9x: Tr(S + 9S - 2 * 3S) = 4 Tr(S) ~ 32
    assert frechet_distance(a, c) == pytest.approx(4 * torch.cov(a.T.double()).trace().item())
    other = torch.randn(2000, 8, generator=gen)
    assert 0 < frechet_distance(a, other) < 0.1  # same distribution: small sampling error
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)


def test_class_diversity_is_between_zero_and_one() -> None:
    assert class_diversity(torch.zeros(100, dtype=torch.long), 10) == 0.0
    assert class_diversity(torch.arange(100) % 10, 10) == pytest.approx(1.0)
    half = class_diversity(torch.arange(100) % 5, 10)  # 5 of 10 classes, evenly
    assert half == pytest.approx(math.log(5) / math.log(10))


def test_classifier_score_bounds() -> None:
    confident = torch.eye(10).repeat(10, 1)  # every class, each predicted with certainty
    assert classifier_score(confident) == pytest.approx(10.0, rel=1e-6)
    assert classifier_score(torch.full((50, 10), 0.1)) == pytest.approx(1.0)


def test_feature_tap_reads_the_last_linear_layers_input() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    tap = FeatureTap(net)
    x = torch.randn(5, 4)
    logits = net(x)
    assert torch.allclose(tap(logits), torch.relu(net[1](x)))
    assert tap.layer == "input of 3"
    tap.close()
    assert torch.equal(FeatureTap(net, use_logits=True)(logits), logits.detach())


# -- convergence detectors ---------------------------------------------------------------


def history(d: list[float], g: list[float]) -> list[dict[str, float]]:
    return [
        {"epoch": i + 1, "d_loss": a, "g_loss": b}
        for i, (a, b) in enumerate(zip(d, g, strict=True))
    ]


def test_divergence_detector() -> None:
    checks = {"d_loss_floor": 0.05, "g_loss_rise": 1.5, "window": 3}
    healthy = history([1.2, 1.1, 1.15, 1.1, 1.12], [0.9, 1.0, 0.95, 1.0, 1.05])
    assert divergence(healthy, **checks) == []
    won = history([1.2, 0.5, 0.02, 0.01, 0.01], [0.9, 2.0, 4.0, 6.0, 9.0])
    (warning,) = divergence(won, **checks)
    assert "divergence" in warning and "epoch 3" in warning
    # D loss near 0 but G not climbing (e.g. both settled): no warning
    flat = history([0.01] * 5, [3.0] * 5)
    assert divergence(flat, **checks) == []
    assert divergence(won[:2], **checks) == []  # shorter than the window


def test_mode_collapse_detector() -> None:
    kwargs = {"diversity_ratio": 0.8, "spread_ratio": 0.5}
    assert mode_collapse(0.98, 1.0, 90.0, 100.0, **kwargs) == []
    across = mode_collapse(0.3, 1.0, 90.0, 100.0, **kwargs)
    assert len(across) == 1 and "class diversity" in across[0]
    within = mode_collapse(0.98, 1.0, 10.0, 100.0, **kwargs)
    assert len(within) == 1 and "spread" in within[0]


# -- models ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "widths"),
    [((1, 28, 28), [32, 16]), ((3, 32, 32), [32, 16, 8]), ((1, 8, 8), [16]), ((1, 9, 13), [8])],
)
def test_dcgan_makes_images_of_the_datasets_shape_in_0_1(shape: tuple, widths: list) -> None:
    model = Dcgan(latent_dim=12, widths=widths).build(info(shape))
    images = model.generator(torch.randn(4, 12))
    assert images.shape == (4, *shape)
    assert images.min() >= 0 and images.max() <= 1
    assert model.discriminator(images).shape == (4,)
    assert model.latent_dim == 12 and model.image_shape == shape


@pytest.mark.parametrize("norm", ["batch", "layer", "spectral", "none"])
def test_dcgan_discriminator_norms(norm: str) -> None:
    model = Dcgan(latent_dim=8, widths=[8, 4], d_norm=norm).build(info((1, 16, 16)))
    assert model.discriminator(torch.randn(3, 1, 16, 16)).shape == (3,)
    # the state dict round-trips (the safetensors artifact and resume rely on it)
    fresh = Dcgan(latent_dim=8, widths=[8, 4], d_norm=norm).build(info((1, 16, 16)))
    fresh.load_state_dict(model.state_dict())


def test_mlp_gan() -> None:
    model = MlpGan(latent_dim=4, hidden=[8]).build(info((1, 6, 6)))
    assert model(torch.randn(3, 4)).shape == (3, 1, 6, 6)
    assert model.discriminator(torch.rand(3, 1, 6, 6)).shape == (3,)


def test_contact_sheet_has_one_row_per_epoch_and_caps_rows() -> None:
    samples = [torch.full((16, 1, 4, 4), e, dtype=torch.uint8) for e in range(3)]
    sheet = contact_sheet(samples, columns=5)
    assert sheet.shape == (1, 3 * 6 + 2, 5 * 6 + 2)
    many = [torch.full((4, 1, 4, 4), e, dtype=torch.uint8) for e in range(50)]
    sheet = contact_sheet(many, columns=4, max_rows=10)
    assert sheet.shape[1] == 10 * 6 + 2
    assert sheet[0, -5, 2].item() == 49  # the last epoch is always the last row
