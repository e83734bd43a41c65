"""train_gan at run time: alternating discriminator and generator steps, resumable by epoch.

Each batch of real images is one discriminator step; every `n_critic`-th discriminator
step (counted over the whole run, so resuming replays it exactly) is followed by one
generator step. The discriminator sees images the way the modality's preprocessor makes
them (augmented, normalised); generated images, made in [0, 1] pixel space, get the same
normalisation. Per-epoch diagnostics accumulate on the device (no per-step host sync):
losses, mean D(x) and D(G(z)), gradient norms of both networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from torchkiln.errors import RunError
from torchkiln.gan.ema import Ema
from torchkiln.io import write_json
from torchkiln.runner import resolve_device
from torchkiln.runtime.datasets import SplitData, open_dataset
from torchkiln.runtime.images import grid, save_grid, save_png, to_uint8
from torchkiln.runtime.loop import (
    Checkpointer,
    EpochProgress,
    NonFiniteGuard,
    chunks,
    epoch_order,
    epoch_seed,
    iterate_batches,
    materialized,
    resident,
    run_key,
    to_device,
)
from torchkiln.runtime.model_artifact import open_model, state_for_saving, write_model
from torchkiln.runtime.preprocess import preprocessor_for
from torchkiln.runtime.progress import log
from torchkiln.stages.base import StageContext

#: the order of the per-epoch diagnostics in history.json records and the log line
DIAGNOSTICS = ("d_loss", "g_loss", "d_real", "d_fake", "grad_norm_d", "grad_norm_g")


def fixed_noise(seed: int, count: int, latent_dim: int) -> torch.Tensor:
    """The noise behind every epoch's sample grid: the same images, watched as they form."""
    return torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed + 4242))


def critic_steps(global_step: int, n_critic: int) -> bool:
    """Whether discriminator step `global_step` (0-based, over the whole run) is followed by
    a generator step: after every n_critic-th one."""
    return (global_step + 1) % n_critic == 0


def grad_norm(params: list[nn.Parameter], clip: float | None) -> torch.Tensor:
    """Total gradient norm (before clipping), on the device; clips when asked."""
    if clip is not None:
        return nn.utils.clip_grad_norm_(params, clip)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return nn.utils.get_total_norm(grads)


def _scheduler(cfg: Any, optimizer: Any, steps: int, epochs: int) -> Any:
    return cfg.scheduler.build(optimizer, steps, epochs) if cfg.scheduler is not None else None


def _interval(scheduler_cfg: Any) -> str:
    return str(getattr(scheduler_cfg, "interval", "epoch"))


@dataclass
class GanFit:
    """Everything one GAN training run holds."""

    model: nn.Module
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    g_sched: Any
    d_sched: Any
    objective: Any
    ema: Ema | None
    preprocess: Any
    device: torch.device
    cfg: Any
    seed: int
    train: SplitData
    noise: torch.Tensor
    history: list[dict[str, Any]] = field(default_factory=list)
    #: uint8 fixed-noise samples of each finished epoch (checkpointed, so a resumed run
    #: still writes every epoch's grid)
    samples: list[torch.Tensor] = field(default_factory=list)

    @property
    def latent_dim(self) -> int:
        return int(self.model.latent_dim)

    def batches_per_epoch(self) -> int:
        return len(self._index_chunks(0))

    def _index_chunks(self, epoch: int) -> list[torch.Tensor]:
        parts = chunks(epoch_order(len(self.train), self.seed, epoch), self.cfg.batch_size)
        if len(parts) > 1 and len(parts[-1]) < self.cfg.batch_size:
            parts = parts[:-1]  # a tiny last batch destabilises BatchNorm and the D/G balance
        return parts

    def sampler(self) -> nn.Module:
        """The generator that is sampled, evaluated and exported: the EMA one when enabled."""
        return self.ema.shadow if self.ema is not None else self.model.generator

    def fake_inputs(self, noise: torch.Tensor) -> torch.Tensor:
        """Generated images as the discriminator sees them (normalised like real ones)."""
        return self.preprocess.normalize(self.model.generator(noise))

    def train_epoch(self, epoch: int, progress: EpochProgress | None = None) -> dict[str, float]:
        cfg, model, obj = self.cfg, self.model, self.objective
        gen, disc = model.generator, model.discriminator
        model.train()
        torch.manual_seed(epoch_seed(self.seed, epoch))  # noise, augmentation, dropout
        index_chunks = self._index_chunks(epoch)
        steps = len(index_chunks)
        g_params = [p for p in gen.parameters() if p.requires_grad]
        d_params = [p for p in disc.parameters() if p.requires_grad]
        guard = NonFiniteGuard(steps, self.device)
        zero = torch.zeros((), device=self.device)
        sums = {k: zero.clone() for k in DIAGNOSTICS}
        g_count = 0
        first_step = epoch * steps
        d_step_sched = self.d_sched is not None and _interval(cfg.discriminator.scheduler) == "step"
        g_step_sched = self.g_sched is not None and _interval(cfg.generator.scheduler) == "step"
        batches = iterate_batches(
            self.train,
            index_chunks,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for step, batch in enumerate(batches):
            inputs, _ = to_device(batch, self.device)
            real = self.preprocess.train_inputs(inputs)[0]
            n = real.shape[0]
            # -- discriminator step: generated images are constants here
            with torch.no_grad():
                fake = self.fake_inputs(torch.randn(n, self.latent_dim, device=self.device))
            d_real, d_fake = disc(real), disc(fake)
            d_loss = obj.discriminator_loss(d_real, d_fake)
            penalty = obj.penalty(disc, real, fake)
            if penalty is not None:
                d_loss = d_loss + penalty
            d_loss.backward()
            sums["grad_norm_d"] += grad_norm(d_params, cfg.discriminator.clip_grad_norm)
            self.d_opt.step()
            self.d_opt.zero_grad(set_to_none=True)
            if d_step_sched:
                self.d_sched.step()
            detached = d_loss.detach()
            guard.record(step, detached)
            sums["d_loss"] += detached
            sums["d_real"] += obj.score(d_real.detach()).mean()
            sums["d_fake"] += obj.score(d_fake.detach()).mean()
            # -- generator step, after every n_critic-th discriminator step
            if critic_steps(first_step + step, cfg.n_critic):
                for p in d_params:  # no D gradients wanted in the G step: skip them
                    p.requires_grad_(False)
                g_loss = obj.generator_loss(
                    disc(self.fake_inputs(torch.randn(n, self.latent_dim, device=self.device)))
                )
                g_loss.backward()
                for p in d_params:
                    p.requires_grad_(True)
                sums["grad_norm_g"] += grad_norm(g_params, cfg.generator.clip_grad_norm)
                self.g_opt.step()
                self.g_opt.zero_grad(set_to_none=True)
                if g_step_sched:
                    self.g_sched.step()
                if self.ema is not None:
                    self.ema.update(gen)
                g_detached = g_loss.detach()
                guard.record(step, detached + g_detached)  # either going non-finite stops
                sums["g_loss"] += g_detached
                g_count += 1
            guard.check(step, epoch + 1, force=step + 1 == steps)
            if progress is not None:
                progress.step(1)
        # D values are means over D steps, G values over G steps (fewer when n_critic > 1)
        per_step = {"g_loss": max(g_count, 1), "grad_norm_g": max(g_count, 1)}
        return {k: float(sums[k]) / per_step.get(k, steps) for k in DIAGNOSTICS}

    @torch.no_grad()
    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """uint8 images from the sampled generator in eval mode (BatchNorm running stats)."""
        sampler = self.sampler()
        was_training = sampler.training
        sampler.eval()
        images = sampler(noise.to(self.device)).float().cpu()
        sampler.train(was_training)
        return to_uint8(images)


def build_gan_fit(ctx: StageContext) -> GanFit:
    cfg = ctx.config
    device = torch.device(resolve_device(ctx.device))
    data = open_dataset(ctx.input("dataset"))
    if data.info.modality != "image":
        raise RunError(f"train_gan generates images; this dataset is {data.info.modality}")
    artifact = open_model(ctx.input("model"))
    model = artifact.build().to(device)
    for attribute in ("generator", "discriminator", "latent_dim"):
        if not hasattr(model, attribute):
            raise RunError(
                f"model {artifact.meta['model']['name']!r} has no `{attribute}`; train_gan "
                "needs a GAN model (dcgan, mlp_gan, or one following gan/nets.py)"
            )
    g_params = [p for p in model.generator.parameters() if p.requires_grad]
    d_params = [p for p in model.discriminator.parameters() if p.requires_grad]
    if not g_params or not d_params:
        raise RunError("the generator or the discriminator is entirely frozen; nothing to train")
    if cfg.loss.needs_input_grad and any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.discriminator.modules()
    ):
        raise RunError(
            f"loss {cfg.loss.name} penalises each example's gradient, which BatchNorm in the "
            "discriminator mixes across the batch; build the model with d_norm: layer, "
            "spectral or none"
        )
    preprocess = preprocessor_for(data.info, ctx.optional_input("transforms")).to(device)
    train = resident(materialized(data.split("train")), device)
    if len(train) < cfg.batch_size:
        raise RunError(
            f"the train split has {len(train)} images, fewer than batch_size {cfg.batch_size}"
        )
    g_opt = cfg.generator.optimizer.build(g_params)
    d_opt = cfg.discriminator.optimizer.build(d_params)
    fit = GanFit(
        model=model,
        g_opt=g_opt,
        d_opt=d_opt,
        g_sched=None,
        d_sched=None,
        objective=cfg.loss.build(),
        ema=Ema(model.generator, cfg.ema.decay) if cfg.ema is not None else None,
        preprocess=preprocess,
        device=device,
        cfg=cfg,
        seed=ctx.seed,
        train=train,
        noise=fixed_noise(ctx.seed, cfg.samples, int(model.latent_dim)),
    )
    batches = fit.batches_per_epoch()
    fit.d_sched = _scheduler(cfg.discriminator, d_opt, batches, cfg.epochs)
    fit.g_sched = _scheduler(cfg.generator, g_opt, math.ceil(batches / cfg.n_critic), cfg.epochs)
    return fit


def _state(fit: GanFit, epoch: int) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "model": fit.model.state_dict(),
        "g_opt": fit.g_opt.state_dict(),
        "d_opt": fit.d_opt.state_dict(),
        "g_sched": fit.g_sched.state_dict() if fit.g_sched is not None else {},
        "d_sched": fit.d_sched.state_dict() if fit.d_sched is not None else {},
        "ema": fit.ema.state_dict() if fit.ema is not None else {},
        "history": fit.history,
        "samples": fit.samples,
    }


def _restore(fit: GanFit, saved: dict[str, Any]) -> int:
    fit.model.load_state_dict(saved["model"])
    fit.g_opt.load_state_dict(saved["g_opt"])
    fit.d_opt.load_state_dict(saved["d_opt"])
    if fit.g_sched is not None:
        fit.g_sched.load_state_dict(saved["g_sched"])
    if fit.d_sched is not None:
        fit.d_sched.load_state_dict(saved["d_sched"])
    if fit.ema is not None:
        fit.ema.load_state_dict(saved["ema"])
    fit.history, fit.samples = list(saved["history"]), list(saved["samples"])
    return int(saved["epoch"])


def contact_sheet(samples: list[torch.Tensor], columns: int, max_rows: int = 30) -> torch.Tensor:
    """One row of `columns` fixed-noise images per epoch (evenly spaced epochs, the last
    always included, when there are more than `max_rows`)."""
    epochs = len(samples)
    if epochs > max_rows:
        picks = sorted({round(i * (epochs - 1) / (max_rows - 1)) for i in range(max_rows)})
    else:
        picks = list(range(epochs))
    rows = [samples[e][:columns] for e in picks]
    return grid(torch.cat(rows), columns=min(columns, int(rows[0].shape[0])))


def write_plots(fit: GanFit, plots_dir: Any) -> None:
    plots_dir.mkdir(parents=True, exist_ok=True)
    write_json(plots_dir / "history.json", fit.history)
    for epoch, images in enumerate(fit.samples, start=1):
        save_grid(images, plots_dir / "samples" / f"epoch_{epoch:03d}.png")
    sheet = contact_sheet(fit.samples, fit.cfg.contact_columns)
    side = max(fit.samples[0].shape[-2:])
    save_png(sheet, plots_dir / "contact_sheet.png", scale=max(1, 64 // side) if side < 64 else 1)


def run_train_gan(ctx: StageContext) -> None:
    cfg = ctx.config
    fit = build_gan_fit(ctx)
    key = run_key(cfg, ctx.seed, ctx.task.name, ctx.device, ctx.inputs)
    checkpoints = Checkpointer(ctx.scratch_dir, key, enabled=cfg.resume)
    start = 0
    saved = checkpoints.load()
    if saved is not None:
        start = _restore(fit, saved)
        log(f"resuming from the checkpoint after epoch {start}")
    progress = EpochProgress(cfg.epochs, fit.batches_per_epoch())
    for epoch in range(start, cfg.epochs):
        progress.start(epoch + 1)
        record: dict[str, Any] = {"epoch": epoch + 1}
        record.update(fit.train_epoch(epoch, progress))
        record["lr_d"] = fit.d_opt.param_groups[0]["lr"]
        record["lr_g"] = fit.g_opt.param_groups[0]["lr"]
        for sched, net in ((fit.d_sched, cfg.discriminator), (fit.g_sched, cfg.generator)):
            if sched is not None and _interval(net.scheduler) == "epoch":
                sched.step()
        fit.history.append(record)
        fit.samples.append(fit.sample(fit.noise))
        progress.end(epoch + 1, record)
        checkpoints.save(_state(fit, epoch + 1))
    artifact = open_model(ctx.input("model"))
    state = state_for_saving(fit.model)
    if fit.ema is not None:  # the averaged generator is the one the artifact carries
        state.update({f"generator.{k}": v for k, v in state_for_saving(fit.ema.shadow).items()})
    training = {
        "kind": "gan",
        "epochs_run": len(fit.history),
        "loss": cfg.loss.model_dump(mode="json"),
        "n_critic": cfg.n_critic,
        "ema_decay": cfg.ema.decay if cfg.ema is not None else None,
        "generator_weights": "ema" if fit.ema is not None else "last",
    }
    write_model(
        ctx.out_dir,
        config=artifact.config(),
        info=artifact.info,
        state=state,
        frozen=artifact.frozen,
        extra={"training": training},
    )
    # the history travels with the model: evaluate_gan's divergence check reads it
    write_json(ctx.out_dir / "history.json", fit.history)
    write_json(ctx.metrics_path, {**fit.history[-1], "epochs_run": len(fit.history)})
    write_plots(fit, ctx.plots_dir)
    checkpoints.clear()
    last = fit.history[-1]
    log(
        f"after {len(fit.history)} epochs: d_loss {last['d_loss']:.4f}, g_loss {last['g_loss']:.4f}"
    )
