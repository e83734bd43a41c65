"""train at run time: supervised classification on the training engine (runtime/engine.py).

The step is what a careful hand-written loop does: forward under autocast, backward,
optional clipping, optimizer step, `zero_grad(set_to_none=True)`. Losses and counts
accumulate on the device; the host syncs only every few dozen steps (the engine's
non-finite check) and at the end of an epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchkiln.errors import RunError
from torchkiln.io import write_json
from torchkiln.runtime.checkpoints import Checkpointer, run_key
from torchkiln.runtime.context import StageContext
from torchkiln.runtime.datasets import SplitData, open_dataset
from torchkiln.runtime.device import resolve_device
from torchkiln.runtime.engine import Meter, Plan, Selection, StepIndex, fit
from torchkiln.runtime.loop import (
    Batch,
    autocast,
    chunks,
    iterate_batches,
    materialized,
    resident,
    to_device,
)
from torchkiln.runtime.model_artifact import open_model, state_for_saving, write_model
from torchkiln.runtime.preprocess import Preprocessor, preprocessor_for
from torchkiln.runtime.progress import log


@dataclass
class SupervisedSteps:
    """A classifier's training step and per-epoch validation (the engine's `Steps`)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: nn.Module
    preprocess: Preprocessor
    device: torch.device
    cfg: Any
    scaler: torch.amp.GradScaler
    val: SplitData | None
    monitor: str
    record_keys: tuple[str, ...] = ("train_loss", "train_accuracy")

    @property
    def plain_model(self) -> nn.Module:
        """The model itself, also when `compile: true` wrapped it."""
        return getattr(self.model, "_orig_mod", self.model)

    def _inputs(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if self.cfg.channels_last:
            return tuple(
                x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
                for x in inputs
            )
        return inputs

    def start_epoch(self, epoch: int) -> None:
        self.model.train()

    def step(self, batch: Batch, at: StepIndex, meter: Meter) -> torch.Tensor:
        cfg, opt = self.cfg, self.optimizer
        inputs, targets = batch
        inputs = self._inputs(self.preprocess.train_inputs(inputs))
        with autocast(self.device, cfg.precision):
            logits = self.model(*inputs)
            loss = self.loss_fn(logits, targets)
        self.scaler.scale(loss / cfg.grad_accumulation).backward()
        if (at.step + 1) % cfg.grad_accumulation == 0 or at.last:
            if cfg.clip_grad_norm is not None:
                self.scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm)
            self.scaler.step(opt)
            self.scaler.update()
            opt.zero_grad(set_to_none=True)
            if self.scheduler is not None and cfg.scheduler.interval == "step":
                self.scheduler.step()
        detached = loss.detach()
        meter.add("train_loss", detached * len(targets), len(targets))
        meter.add("train_accuracy", (logits.detach().argmax(dim=1) == targets).sum(), len(targets))
        return detached

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

    def finish_epoch(self, epoch: int, record: dict[str, Any]) -> dict[str, Any]:
        more: dict[str, Any] = self.validate()
        more["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None and self.cfg.scheduler.interval == "epoch":
            if self.cfg.scheduler.needs_metric:
                self.scheduler.step({**record, **more}[self.monitor])
            else:
                self.scheduler.step()
        return more

    def snapshot(self) -> dict[str, torch.Tensor]:
        return state_for_saving(self.plain_model)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.plain_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plain_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def plan_of(cfg: Any) -> Plan:
    return Plan(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        bucket_by_length=cfg.bucket_by_length,
        bucket_pool=cfg.bucket_pool,
        num_workers=cfg.num_workers,
    )


def build_steps(ctx: StageContext) -> tuple[SupervisedSteps, SplitData]:
    """Model, optimizer, scheduler, loss and data of a train stage; returns the steps and
    the training split."""
    cfg = ctx.config
    device = resolve_device(ctx.device, deterministic=ctx.deterministic)
    data = open_dataset(ctx.input("dataset"))
    model = open_model(ctx.input("model")).build().to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise RunError("every parameter is frozen; nothing to train (check build_model's freeze)")
    optimizer = cfg.optimizer.build(trainable)
    train = resident(materialized(data.split("train")), device)
    val = resident(materialized(data.split("val")), device) if data.count("val") else None
    monitor = cfg.monitor if val is not None else "train_loss"
    scheduler = None
    if cfg.scheduler is not None:
        if cfg.scheduler.needs_metric and val is None:
            raise RunError(f"{cfg.scheduler.name} needs validation data; set split.val > 0")
        optimizer_steps = math.ceil(math.ceil(len(train) / cfg.batch_size) / cfg.grad_accumulation)
        mode = "min" if monitor.endswith("loss") else "max"
        scheduler = cfg.scheduler.build(optimizer, optimizer_steps, cfg.epochs, mode=mode)
    if cfg.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    steps = SupervisedSteps(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=cfg.loss.build(data.info).to(device),
        preprocess=preprocessor_for(data.info, ctx.optional_input("transforms")).to(device),
        device=device,
        cfg=cfg,
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"),
        val=val,
        monitor=monitor,
    )
    return steps, train


def run_train(ctx: StageContext) -> None:
    cfg = ctx.config
    steps, train = build_steps(ctx)
    if steps.val is None:
        log("no validation split: the last epoch is kept (monitor falls back to train_loss)")
    selection = Selection(
        monitor=steps.monitor,
        mode="min" if steps.monitor.endswith("loss") else "max",
        keep_last=steps.val is None,
        min_delta=cfg.early_stopping.min_delta if cfg.early_stopping else 0.0,
        patience=cfg.early_stopping.patience if cfg.early_stopping else None,
    )
    key = run_key(cfg, ctx.seed, ctx.task.name, ctx.device, ctx.inputs)
    checkpoints = Checkpointer(ctx.scratch_dir, key, stage=ctx.stage, enabled=cfg.resume)
    result = fit(
        steps,
        train,
        plan_of(cfg),
        selection,
        seed=ctx.seed,
        device=steps.device,
        checkpoints=checkpoints,
    )
    artifact = open_model(ctx.input("model"))
    write_model(
        ctx.out_dir,
        config=artifact.config(),
        info=artifact.info,
        state=result.state,
        frozen=artifact.frozen,
        extra={
            "training": {
                "best_epoch": result.best_epoch,
                "monitor": steps.monitor,
                "epochs_run": len(result.history),
                "stopped_early": result.stopped_early,
            }
        },
    )
    summary = {k: v for k, v in result.best_record.items() if k != "epoch"}
    write_json(
        ctx.metrics_path,
        {**summary, "best_epoch": result.best_epoch, "epochs_run": len(result.history)},
    )
    ctx.plots_dir.mkdir(parents=True, exist_ok=True)
    write_json(ctx.plots_dir / "history.json", result.history)
    checkpoints.clear()
    log(f"best epoch {result.best_epoch}: {steps.monitor} {result.best_value:.4f}")
