"""train at run time: supervised classification on the training engine (runtime/engine.py).

The step is what a careful hand-written loop does: forward under autocast, backward,
optional clipping, optimizer step, `zero_grad(set_to_none=True)`. Losses and counts
accumulate on the device; the host syncs only every few dozen steps (the engine's
non-finite check) and at the end of an epoch.

With `distributed:`, every rank runs this with its share of each batch; the model is
wrapped in DDP or FSDP (`runtime/distributed.py`). Validation is sharded too: each rank
scores its share of the validation split and the sums are added up over the ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchkiln.errors import RunError
from torchkiln.io import write_json
from torchkiln.runtime import distributed
from torchkiln.runtime.board import Board
from torchkiln.runtime.context import StageContext
from torchkiln.runtime.datasets import SplitData, open_dataset
from torchkiln.runtime.distributed import SINGLE, Group
from torchkiln.runtime.engine import FitResult, Meter, Plan, Selection, StepIndex
from torchkiln.runtime.loop import (
    Batch,
    autocast,
    chunks,
    iterate_batches,
    materialized,
    resident,
    to_device,
)
from torchkiln.runtime.model_artifact import open_model, write_model
from torchkiln.runtime.preprocess import Preprocessor, preprocessor_for
from torchkiln.runtime.progress import log
from torchkiln.runtime.training import distributed_record, run_training


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
    group: Group = SINGLE
    #: TensorBoard (rank 0, `loggers: [tensorboard]`): the first batch's images are shown
    board: Board | None = None
    record_keys: tuple[str, ...] = ("train_loss", "train_accuracy")

    @property
    def plain_model(self) -> nn.Module:
        """The model itself, also when `compile: true` or DDP wrapped it."""
        return distributed.unwrap(self.model)

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
        if self.board is not None and at.global_step == 0 and inputs[0].dtype == torch.uint8:
            self.board.images("train/first_batch", inputs[0][:32], 0)
        inputs = self._inputs(self.preprocess.train_inputs(inputs))
        with autocast(self.device, cfg.precision):
            logits = self.model(*inputs)
            loss = self.loss_fn(logits, targets)
        share = loss * at.scale if at.scale != 1.0 else loss  # this rank's part of the batch
        self.scaler.scale(share / cfg.grad_accumulation).backward()
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
        shares = [distributed.validation_share(c, self.group) for c in index_chunks]
        loader = iterate_batches(
            self.val, [index for index, _ in shares], num_workers=self.cfg.num_workers
        )
        for (_, counted), batch in zip(shares, loader, strict=True):
            inputs, targets = to_device(batch, self.device)
            inputs = self._inputs(self.preprocess.eval_inputs(inputs))
            with autocast(self.device, self.cfg.precision):
                logits = self.model(*inputs)
                loss = self.loss_fn(logits.float(), targets)
            if counted:
                loss_sum += loss * len(targets)
                correct += (logits.argmax(dim=1) == targets).sum()
        loss_sum, correct = distributed.all_sum([loss_sum, correct], self.group)
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
        state = distributed.full_state(self.model, self.group)
        return {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": distributed.full_state(self.model, self.group),
            "optimizer": distributed.optimizer_state(self.model, self.optimizer, self.group),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        distributed.load_full_state(self.model, state["model"], self.group)
        distributed.load_optimizer_state(self.model, self.optimizer, state["optimizer"], self.group)
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


def build_steps(
    ctx: StageContext, device: torch.device, group: Group = SINGLE
) -> tuple[SupervisedSteps, SplitData]:
    """Model, optimizer, scheduler, loss and data of a train stage; returns the steps and
    the training split."""
    cfg = ctx.config
    data = open_dataset(ctx.input("dataset"))
    model = open_model(ctx.input("model")).build().to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if not any(p.requires_grad for p in model.parameters()):
        raise RunError("every parameter is frozen; nothing to train (check build_model's freeze)")
    model = distributed.wrap(model, cfg.distributed, group, device)
    optimizer = cfg.optimizer.build([p for p in model.parameters() if p.requires_grad])
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
        group=group,
    )
    return steps, train


def selection_of(steps: SupervisedSteps) -> Selection:
    """The best epoch by the monitored value; without validation data, the last one."""
    cfg = steps.cfg
    if steps.val is None:
        log("no validation split: the last epoch is kept (monitor falls back to train_loss)")
    return Selection(
        monitor=steps.monitor,
        mode="min" if steps.monitor.endswith("loss") else "max",
        keep_last=steps.val is None,
        min_delta=cfg.early_stopping.min_delta if cfg.early_stopping else 0.0,
        patience=cfg.early_stopping.patience if cfg.early_stopping else None,
    )


def run_train(ctx: StageContext) -> None:
    steps, result = run_training(ctx, build_steps, plan_of(ctx.config), selection_of, write_outputs)
    log(f"best epoch {result.best_epoch}: {steps.monitor} {result.best_value:.4f}")


def write_outputs(
    ctx: StageContext, steps: SupervisedSteps, result: FitResult, group: Group
) -> None:
    """The trained model (the selected epoch's weights), metrics and the history plot."""
    artifact = open_model(ctx.input("model"))
    training: dict[str, Any] = {
        "best_epoch": result.best_epoch,
        "monitor": steps.monitor,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
    }
    training.update(distributed_record(ctx.config, group))
    write_model(
        ctx.out_dir,
        config=artifact.config(),
        info=artifact.info,
        state=result.state,
        frozen=artifact.frozen,
        extra={"training": training},
    )
    summary = {k: v for k, v in result.best_record.items() if k != "epoch"}
    write_json(
        ctx.metrics_path,
        {**summary, "best_epoch": result.best_epoch, "epochs_run": len(result.history)},
    )
    ctx.plots_dir.mkdir(parents=True, exist_ok=True)
    write_json(ctx.plots_dir / "history.json", result.history)
