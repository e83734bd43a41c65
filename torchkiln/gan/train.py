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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchkiln.errors import RunError
from torchkiln.gan.ema import Ema
from torchkiln.io import write_json
from torchkiln.runtime import distributed
from torchkiln.runtime.board import Board
from torchkiln.runtime.context import StageContext
from torchkiln.runtime.datasets import SplitData, open_dataset
from torchkiln.runtime.distributed import SINGLE, Group
from torchkiln.runtime.engine import FitResult, Meter, Plan, Selection, StepIndex, steps_per_epoch
from torchkiln.runtime.images import grid, save_grid, save_png, to_uint8
from torchkiln.runtime.loop import Batch, materialized, resident
from torchkiln.runtime.model_artifact import open_model, state_for_saving, write_model
from torchkiln.runtime.preprocess import ImagePreprocessor, preprocessor_for
from torchkiln.runtime.progress import log
from torchkiln.runtime.training import distributed_record, run_training

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


def _steps_per(net: Any, interval: str) -> bool:
    return net.scheduler is not None and net.scheduler.interval == interval


@dataclass
class GanSteps:
    """A GAN's alternating discriminator and generator steps (the engine's `Steps`)."""

    model: nn.Module
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    g_sched: Any
    d_sched: Any
    objective: Any
    ema: Ema | None
    preprocess: ImagePreprocessor
    device: torch.device
    cfg: Any
    noise: torch.Tensor
    #: uint8 fixed-noise samples of each finished epoch (checkpointed, so a resumed run
    #: still writes every epoch's grid)
    samples: list[torch.Tensor] = field(default_factory=list)
    g_params: list[nn.Parameter] = field(default_factory=list)
    d_params: list[nn.Parameter] = field(default_factory=list)
    #: the networks that take gradient steps: DDP-wrapped on several processes (the
    #: generator's and the discriminator's gradients are averaged separately), else the
    #: model's own; no-gradient uses (the D step's fakes, the G step's critic) take the
    #: plain networks, so nothing is synchronised that has no gradient
    train_g: nn.Module | None = None
    train_d: nn.Module | None = None
    #: TensorBoard (rank 0, `loggers: [tensorboard]`): each epoch's sample grid is shown
    board: Board | None = None
    record_keys: tuple[str, ...] = DIAGNOSTICS

    def __post_init__(self) -> None:
        if self.train_g is None:
            self.train_g = self.model.generator
        if self.train_d is None:
            self.train_d = self.model.discriminator

    @property
    def latent_dim(self) -> int:
        return int(self.model.latent_dim)

    def sampler(self) -> nn.Module:
        """The generator that is sampled, evaluated and exported: the EMA one when enabled."""
        return self.ema.shadow if self.ema is not None else self.model.generator

    def fake_inputs(self, noise: torch.Tensor, generator: nn.Module | None = None) -> torch.Tensor:
        """Generated images as the discriminator sees them (normalised like real ones)."""
        return self.preprocess.normalize((generator or self.model.generator)(noise))

    def start_epoch(self, epoch: int) -> None:
        self.model.train()
        self.g_params = [p for p in self.model.generator.parameters() if p.requires_grad]
        self.d_params = [p for p in self.model.discriminator.parameters() if p.requires_grad]

    def step(self, batch: Batch, at: StepIndex, meter: Meter) -> torch.Tensor:
        cfg, obj, disc = self.cfg, self.objective, self.train_d
        inputs, _ = batch
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
        meter.add("grad_norm_d", grad_norm(self.d_params, cfg.discriminator.clip_grad_norm))
        self.d_opt.step()
        self.d_opt.zero_grad(set_to_none=True)
        if _steps_per(cfg.discriminator, "step"):
            self.d_sched.step()
        watched = d_loss.detach()
        meter.add("d_loss", watched)
        meter.add("d_real", obj.score(d_real.detach()).mean())
        meter.add("d_fake", obj.score(d_fake.detach()).mean())
        # -- generator step, after every n_critic-th discriminator step
        if critic_steps(at.global_step, cfg.n_critic):
            for p in self.d_params:  # no D gradients wanted in the G step: skip them
                p.requires_grad_(False)
            noise = torch.randn(n, self.latent_dim, device=self.device)
            g_loss = obj.generator_loss(
                self.model.discriminator(self.fake_inputs(noise, self.train_g))
            )
            g_loss.backward()
            for p in self.d_params:
                p.requires_grad_(True)
            meter.add("grad_norm_g", grad_norm(self.g_params, cfg.generator.clip_grad_norm))
            self.g_opt.step()
            self.g_opt.zero_grad(set_to_none=True)
            if _steps_per(cfg.generator, "step"):
                self.g_sched.step()
            if self.ema is not None:
                self.ema.update(self.model.generator)
            meter.add("g_loss", g_loss.detach())
            watched = watched + g_loss.detach()  # either going non-finite stops
        return watched

    def finish_epoch(self, epoch: int, record: dict[str, Any]) -> dict[str, Any]:
        more = {"lr_d": self.d_opt.param_groups[0]["lr"], "lr_g": self.g_opt.param_groups[0]["lr"]}
        for sched, net in (
            (self.d_sched, self.cfg.discriminator),
            (self.g_sched, self.cfg.generator),
        ):
            if _steps_per(net, "epoch"):
                sched.step()
        self.samples.append(self.sample(self.noise))
        if self.board is not None:
            self.board.images("samples/fixed_noise", self.samples[-1], epoch + 1)
        return more

    def snapshot(self) -> dict[str, torch.Tensor]:
        """The whole model; with an EMA, the averaged generator is the one kept."""
        state = state_for_saving(self.model)
        if self.ema is not None:
            state.update(
                {f"generator.{k}": v for k, v in state_for_saving(self.ema.shadow).items()}
            )
        return state

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "g_opt": self.g_opt.state_dict(),
            "d_opt": self.d_opt.state_dict(),
            "g_sched": self.g_sched.state_dict() if self.g_sched is not None else {},
            "d_sched": self.d_sched.state_dict() if self.d_sched is not None else {},
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "samples": self.samples,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.g_opt.load_state_dict(state["g_opt"])
        self.d_opt.load_state_dict(state["d_opt"])
        if self.g_sched is not None:
            self.g_sched.load_state_dict(state["g_sched"])
        if self.d_sched is not None:
            self.d_sched.load_state_dict(state["d_sched"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.samples = list(state["samples"])

    @torch.no_grad()
    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """uint8 images from the sampled generator in eval mode (BatchNorm running stats)."""
        sampler = self.sampler()
        was_training = sampler.training
        sampler.eval()
        images = sampler(noise.to(self.device)).float().cpu()
        sampler.train(was_training)
        return to_uint8(images)


def build_gan_steps(
    ctx: StageContext, device: torch.device, group: Group = SINGLE
) -> tuple[GanSteps, SplitData]:
    """The GAN, its optimizers, schedules and objective; returns the steps and the
    training split."""
    cfg = ctx.config
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
    if not isinstance(preprocess, ImagePreprocessor):
        raise RunError("train_gan needs the image preprocessor (it normalises generated images)")
    train = resident(materialized(data.split("train")), device)
    if len(train) < cfg.batch_size:
        raise RunError(
            f"the train split has {len(train)} images, fewer than batch_size {cfg.batch_size}"
        )
    if group.active and cfg.distributed.sync_batchnorm:
        model.generator = nn.SyncBatchNorm.convert_sync_batchnorm(model.generator)
        model.discriminator = nn.SyncBatchNorm.convert_sync_batchnorm(model.discriminator)
        g_params = [p for p in model.generator.parameters() if p.requires_grad]
        d_params = [p for p in model.discriminator.parameters() if p.requires_grad]
    g_opt = cfg.generator.optimizer.build(g_params)
    d_opt = cfg.discriminator.optimizer.build(d_params)
    batches = steps_per_epoch(train, plan_of(cfg))
    steps = GanSteps(
        model=model,
        g_opt=g_opt,
        d_opt=d_opt,
        g_sched=_scheduler(cfg.generator, g_opt, math.ceil(batches / cfg.n_critic), cfg.epochs),
        d_sched=_scheduler(cfg.discriminator, d_opt, batches, cfg.epochs),
        objective=cfg.loss.build(),
        ema=Ema(model.generator, cfg.ema.decay) if cfg.ema is not None else None,
        preprocess=preprocess,
        device=device,
        cfg=cfg,
        noise=fixed_noise(ctx.seed, cfg.samples, int(model.latent_dim)),
        train_g=distributed.ddp(model.generator, group, device),
        train_d=distributed.ddp(model.discriminator, group, device),
    )
    return steps, train


def plan_of(cfg: Any) -> Plan:
    # a tiny last batch destabilises BatchNorm and the D/G balance: it is dropped
    return Plan(
        epochs=cfg.epochs, batch_size=cfg.batch_size, drop_last=True, num_workers=cfg.num_workers
    )


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


def write_plots(
    history: list[dict[str, Any]], samples: list[torch.Tensor], columns: int, plots_dir: Path
) -> None:
    plots_dir.mkdir(parents=True, exist_ok=True)
    write_json(plots_dir / "history.json", history)
    for epoch, images in enumerate(samples, start=1):
        save_grid(images, plots_dir / "samples" / f"epoch_{epoch:03d}.png")
    sheet = contact_sheet(samples, columns)
    side = max(samples[0].shape[-2:])
    save_png(sheet, plots_dir / "contact_sheet.png", scale=max(1, 64 // side) if side < 64 else 1)


def run_train_gan(ctx: StageContext) -> None:
    # there is no validation value: the last epoch's networks are the result
    _, result = run_training(
        ctx,
        build_gan_steps,
        plan_of(ctx.config),
        lambda steps: Selection(monitor="g_loss", keep_last=True),
        write_outputs,
    )
    last = result.history[-1]
    log(
        f"after {len(result.history)} epochs: d_loss {last['d_loss']:.4f}, "
        f"g_loss {last['g_loss']:.4f}"
    )


def write_outputs(ctx: StageContext, steps: GanSteps, result: FitResult, group: Group) -> None:
    """The trained GAN (the EMA generator when kept), its history and sample grids."""
    cfg = ctx.config
    artifact = open_model(ctx.input("model"))
    training: dict[str, Any] = {
        "kind": "gan",
        "epochs_run": len(result.history),
        "loss": cfg.loss.model_dump(mode="json"),
        "n_critic": cfg.n_critic,
        "ema_decay": cfg.ema.decay if cfg.ema is not None else None,
        "generator_weights": "ema" if steps.ema is not None else "last",
    }
    training.update(distributed_record(cfg, group))
    write_model(
        ctx.out_dir,
        config=artifact.config(),
        info=artifact.info,
        state=result.state,
        frozen=artifact.frozen,
        extra={"training": training},
    )
    # the history travels with the model: evaluate_gan's divergence check reads it
    write_json(ctx.out_dir / "history.json", result.history)
    write_json(ctx.metrics_path, {**result.history[-1], "epochs_run": len(result.history)})
    write_plots(result.history, steps.samples, cfg.contact_columns, ctx.plots_dir)
