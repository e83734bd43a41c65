"""train at run time: a plain supervised loop, resumable by epoch, with best-epoch selection.

The step is what a careful hand-written loop does: forward under autocast, backward,
optional clipping, optimizer step, `zero_grad(set_to_none=True)`. Losses and counts
accumulate on the device; the host syncs only every few dozen steps (non-finite check)
and at the end of an epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from torchkiln.errors import RunError
from torchkiln.io import write_json
from torchkiln.runner import resolve_device
from torchkiln.runtime.datasets import SplitData, open_dataset
from torchkiln.runtime.loop import (
    Checkpointer,
    EpochProgress,
    NonFiniteGuard,
    autocast,
    bucketed_chunks,
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


@dataclass
class Fit:
    """Everything one training run holds, built once from the config and the inputs."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: nn.Module
    preprocess: Any
    device: torch.device
    cfg: Any
    scaler: torch.amp.GradScaler
    seed: int
    train: SplitData
    val: SplitData | None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.cfg.batch_size)

    def _inputs(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if self.cfg.channels_last:
            return tuple(
                x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
                for x in inputs
            )
        return inputs

    def epoch_batches(self, epoch: int) -> list[torch.Tensor]:
        """The index batches of an epoch, in order (seeded by epoch: resuming replays it)."""
        order = epoch_order(len(self.train), self.seed, epoch)
        if self.cfg.bucket_by_length:
            lengths = getattr(self.train, "lengths", None)
            if lengths is None:
                raise RunError(
                    "bucket_by_length groups examples by length, but this dataset's "
                    "examples have no lengths (they all have one size); turn it off"
                )
            seed = epoch_seed(self.seed, epoch) + 1
            return bucketed_chunks(order, lengths, self.cfg.batch_size, self.cfg.bucket_pool, seed)
        return chunks(order, self.cfg.batch_size)

    def train_epoch(self, epoch: int, progress: EpochProgress | None = None) -> dict[str, float]:
        """One pass over the shuffled training split; returns mean loss and accuracy."""
        cfg, model, opt = self.cfg, self.model, self.optimizer
        model.train()
        torch.manual_seed(epoch_seed(self.seed, epoch))  # dropout and augmentation draws
        index_chunks = self.epoch_batches(epoch)
        steps = len(index_chunks)
        guard = NonFiniteGuard(steps, self.device)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        step_scheduler = self.scheduler is not None and _interval(cfg.scheduler) == "step"
        batches = iterate_batches(
            self.train,
            index_chunks,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for step, batch in enumerate(batches):
            inputs, targets = to_device(batch, self.device)
            inputs = self._inputs(self.preprocess.train_inputs(inputs))
            with autocast(self.device, cfg.precision):
                logits = model(*inputs)
                loss = self.loss_fn(logits, targets)
            self.scaler.scale(loss / cfg.grad_accumulation).backward()
            if (step + 1) % cfg.grad_accumulation == 0 or step + 1 == steps:
                if cfg.clip_grad_norm is not None:
                    self.scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
                self.scaler.step(opt)
                self.scaler.update()
                opt.zero_grad(set_to_none=True)
                if step_scheduler:
                    self.scheduler.step()
            detached = loss.detach()
            guard.record(step, detached)
            loss_sum += detached * len(targets)
            correct += (logits.detach().argmax(dim=1) == targets).sum()
            guard.check(step, epoch + 1, force=step + 1 == steps)
            if progress is not None:
                progress.step(1)
        n = len(self.train)
        return {"train_loss": float(loss_sum) / n, "train_accuracy": float(correct) / n}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.val is None or len(self.val) == 0:
            return {}
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        index_chunks = chunks(torch.arange(len(self.val)), max(self.cfg.batch_size, 256))
        for batch in iterate_batches(self.val, index_chunks, num_workers=self.cfg.num_workers):
            inputs, targets = to_device(batch, self.device)
            inputs = self._inputs(self.preprocess.eval_inputs(inputs))
            with autocast(self.device, self.cfg.precision):
                logits = self.model(*inputs)
                loss = self.loss_fn(logits.float(), targets)
            loss_sum += loss * len(targets)
            correct += (logits.argmax(dim=1) == targets).sum()
        n = len(self.val)
        return {"val_loss": float(loss_sum) / n, "val_accuracy": float(correct) / n}


def _interval(scheduler_cfg: Any) -> str:
    return str(getattr(scheduler_cfg, "interval", "epoch"))


def _better(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def build_fit(ctx: StageContext, *, train_split: str = "train") -> Fit:
    """Assemble model, optimizer, scheduler, loss and data for a train stage's context."""
    cfg = ctx.config
    device = torch.device(resolve_device(ctx.device))
    data = open_dataset(ctx.input("dataset"))
    artifact = open_model(ctx.input("model"))
    model = artifact.build().to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise RunError("every parameter is frozen; nothing to train (check build_model's freeze)")
    optimizer = cfg.optimizer.build(trainable)
    train = resident(materialized(data.split(train_split)), device)
    val = resident(materialized(data.split("val")), device) if data.count("val") else None
    epochs = cfg.epochs
    steps = math.ceil(math.ceil(len(train) / cfg.batch_size) / cfg.grad_accumulation)
    scheduler = None
    if cfg.scheduler is not None:
        if getattr(cfg.scheduler, "needs_metric", False):
            if val is None:
                raise RunError(f"{cfg.scheduler.name} needs validation data; set split.val > 0")
            mode = "min" if cfg.monitor.endswith("loss") else "max"
            scheduler = cfg.scheduler.build(optimizer, steps, epochs, mode=mode)
        else:
            scheduler = cfg.scheduler.build(optimizer, steps, epochs)
    return Fit(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=cfg.loss.build(data.info).to(device),
        preprocess=preprocessor_for(data.info, ctx.optional_input("transforms")).to(device),
        device=device,
        cfg=cfg,
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"),
        seed=ctx.seed,
        train=train,
        val=val,
    )


def _state(fit: Fit, epoch: int, best: dict[str, Any]) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "model": fit.model.state_dict(),
        "optimizer": fit.optimizer.state_dict(),
        "scheduler": fit.scheduler.state_dict() if fit.scheduler is not None else {},
        "scaler": fit.scaler.state_dict(),
        "history": fit.history,
        "best": best,
    }


def run_train(ctx: StageContext) -> None:
    cfg = ctx.config
    fit = build_fit(ctx)
    if cfg.compile:
        fit.model = torch.compile(fit.model)  # type: ignore[assignment]
    plain_model = getattr(fit.model, "_orig_mod", fit.model)
    monitor = cfg.monitor if fit.val is not None else "train_loss"
    mode = "min" if monitor.endswith("loss") else "max"
    if fit.val is None:
        log("no validation split: the last epoch is kept (monitor falls back to train_loss)")
    key = run_key(cfg, ctx.seed, ctx.task.name, ctx.device, ctx.inputs)
    checkpoints = Checkpointer(ctx.scratch_dir, key, enabled=cfg.resume)
    best: dict[str, Any] = {"value": None, "epoch": 0, "state": None, "waited": 0}
    start = 0
    saved = checkpoints.load()
    if saved is not None:
        plain_model.load_state_dict(saved["model"])
        fit.optimizer.load_state_dict(saved["optimizer"])
        if fit.scheduler is not None:
            fit.scheduler.load_state_dict(saved["scheduler"])
        fit.scaler.load_state_dict(saved["scaler"])
        fit.history, best, start = saved["history"], saved["best"], saved["epoch"]
        log(f"resuming from the checkpoint after epoch {start}")
    progress = EpochProgress(cfg.epochs, fit.steps_per_epoch)
    stopped_early = bool(best.get("stopped", False))
    for epoch in range(start, cfg.epochs if not stopped_early else start):
        progress.start(epoch + 1)
        record: dict[str, Any] = {"epoch": epoch + 1}
        record.update(fit.train_epoch(epoch, progress))
        record.update(fit.validate())
        record["lr"] = fit.optimizer.param_groups[0]["lr"]
        if fit.scheduler is not None and _interval(cfg.scheduler) == "epoch":
            if getattr(cfg.scheduler, "needs_metric", False):
                fit.scheduler.step(record[monitor])
            else:
                fit.scheduler.step()
        fit.history.append(record)
        min_delta = cfg.early_stopping.min_delta if cfg.early_stopping else 0.0
        note = ""
        if fit.val is None or _better(record[monitor], best["value"], mode, min_delta):
            best = {
                "value": record[monitor],
                "epoch": epoch + 1,
                "state": state_for_saving(plain_model),
                "waited": 0,
            }
            note = "  *"
        else:
            best["waited"] += 1
        progress.end(epoch + 1, record, note)
        if cfg.early_stopping and best["waited"] >= cfg.early_stopping.patience:
            stopped_early = best["stopped"] = True
            log(f"early stopping: {monitor} has not improved for {best['waited']} epochs")
        checkpoints.save(_state(fit, epoch + 1, best))
        if stopped_early:
            break
    artifact = open_model(ctx.input("model"))
    best_record = fit.history[best["epoch"] - 1]
    write_model(
        ctx.out_dir,
        config=artifact.config(),
        info=artifact.info,
        state=best["state"],
        frozen=artifact.frozen,
        extra={
            "training": {
                "best_epoch": best["epoch"],
                "monitor": monitor,
                "epochs_run": len(fit.history),
                "stopped_early": stopped_early,
            }
        },
    )
    summary = {k: v for k, v in best_record.items() if k != "epoch"}
    write_json(
        ctx.metrics_path, {**summary, "best_epoch": best["epoch"], "epochs_run": len(fit.history)}
    )
    ctx.plots_dir.mkdir(parents=True, exist_ok=True)
    write_json(ctx.plots_dir / "history.json", fit.history)
    checkpoints.clear()
    log(f"best epoch {best['epoch']}: {monitor} {best['value']:.4f}")
