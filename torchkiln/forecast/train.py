"""train_forecast at run time: forecasting windows on the training engine (runtime/engine.py).

A step is the plain supervised one: scale the window (the dataset's scaler), forward,
the loss against the scaled targets, backward, clip, optimizer step. Batches mix windows
of every series (the engine shuffles all training windows); each window carries its series
index, so each series keeps its own scaling (and embedding, when the model has one). The
epoch adds the validation loss (scaled, as trained) and the validation MAE in original
units. With `distributed:`, every rank takes its share of each batch (the engine) and of
the validation windows; the sums are added up over the ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchkiln.errors import RunError
from torchkiln.forecast.losses import Mse, Pinball
from torchkiln.forecast.preprocess import SeriesPreprocessor
from torchkiln.io import write_json
from torchkiln.runtime import distributed
from torchkiln.runtime.board import Board
from torchkiln.runtime.context import StageContext
from torchkiln.runtime.datasets import SplitData, open_dataset
from torchkiln.runtime.distributed import SINGLE, Group
from torchkiln.runtime.engine import FitResult, Meter, Plan, Selection, StepIndex
from torchkiln.runtime.loop import Batch, chunks, iterate_batches, resident, to_device
from torchkiln.runtime.model_artifact import open_model, write_model
from torchkiln.runtime.preprocess import preprocessor_for
from torchkiln.runtime.progress import log
from torchkiln.runtime.training import distributed_record, run_training


@dataclass
class ForecastSteps:
    """A forecaster's training step and per-epoch validation (the engine's `Steps`)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: nn.Module
    preprocess: SeriesPreprocessor
    device: torch.device
    cfg: Any
    val: SplitData | None
    group: Group = SINGLE
    #: TensorBoard (rank 0, `loggers: [tensorboard]`)
    board: Board | None = None
    record_keys: tuple[str, ...] = ("train_loss",)

    @property
    def plain_model(self) -> nn.Module:
        """The network itself, also when DDP wraps it."""
        return distributed.unwrap(self.model)

    def start_epoch(self, epoch: int) -> None:
        self.model.train()

    def step(self, batch: Batch, at: StepIndex, meter: Meter) -> torch.Tensor:
        inputs, targets = batch
        outputs = self.model(*self.preprocess.train_inputs(inputs))
        loss = self.loss_fn(outputs, self.preprocess.scale_target(targets, inputs[1]))
        (loss * at.scale if at.scale != 1.0 else loss).backward()  # this rank's share
        if self.cfg.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None and self.cfg.scheduler.interval == "step":
            self.scheduler.step()
        detached = loss.detach()
        meter.add("train_loss", detached * len(targets), len(targets))
        return detached

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.val is None or len(self.val) == 0:
            return {}
        self.model.eval()
        model = self.plain_model
        forecaster = self.preprocess.forecaster(model)
        loss_sum = torch.zeros((), device=self.device)
        error_sum = torch.zeros((), device=self.device)
        shares = [
            distributed.validation_share(c, self.group)
            for c in chunks(torch.arange(len(self.val)), 1024)
        ]
        loader = iterate_batches(self.val, [index for index, _ in shares])
        for (_, counted), batch in zip(shares, loader, strict=True):
            inputs, targets = to_device(batch, self.device)
            outputs = model(*self.preprocess.eval_inputs(inputs))
            if not counted:
                continue
            scaled = self.preprocess.scale_target(targets, inputs[1])
            loss_sum += self.loss_fn(outputs, scaled) * len(targets)
            point = point_forecast(forecaster(*inputs), model)
            error_sum += (point - targets).abs().mean(dim=(1, 2)).sum()
        loss_sum, error_sum = distributed.all_sum([loss_sum, error_sum], self.group)
        n = len(self.val)
        return {"val_loss": float(loss_sum) / n, "val_mae": float(error_sum) / n}

    def finish_epoch(self, epoch: int, record: dict[str, Any]) -> dict[str, Any]:
        more: dict[str, Any] = self.validate()
        more["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None and self.cfg.scheduler.interval == "epoch":
            if self.cfg.scheduler.needs_metric:
                self.scheduler.step({**record, **more}["val_loss"])
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
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        distributed.load_full_state(self.model, state["model"], self.group)
        distributed.load_optimizer_state(self.model, self.optimizer, state["optimizer"], self.group)
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])


def point_forecast(forecast: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """[B, H, C]: the point forecast of a `ScaledForecaster` output (the median of a
    quantile model)."""
    quantiles = getattr(model, "quantiles", None)
    if not quantiles:
        return forecast
    return forecast[..., quantiles.index(0.5)]


def loss_of(cfg: Any, model: nn.Module) -> nn.Module:
    """The configured loss, or the default: pinball for a quantile model, else mse."""
    quantiles = getattr(model, "quantiles", None)
    chosen = cfg.loss if cfg.loss is not None else (Pinball() if quantiles else Mse())
    if chosen.for_quantiles and not quantiles:
        raise RunError(
            f"loss {chosen.name} trains quantiles, but the model predicts one value per step; "
            "give the model `quantiles:` (e.g. [0.1, 0.5, 0.9]) or use mse, mae or huber"
        )
    if quantiles and not chosen.for_quantiles:
        raise RunError(
            f"the model predicts quantiles {quantiles}; loss {chosen.name} trains a point "
            "forecast. Use loss pinball (the default for quantile models)"
        )
    return chosen.build(quantiles)


def plan_of(cfg: Any) -> Plan:
    return Plan(epochs=cfg.epochs, batch_size=cfg.batch_size)


def build_forecast_steps(
    ctx: StageContext, device: torch.device, group: Group = SINGLE
) -> tuple[ForecastSteps, SplitData]:
    cfg = ctx.config
    data = open_dataset(ctx.input("dataset"))
    if data.info.modality != "series":
        raise RunError(
            f"train_forecast trains on time series; this dataset is {data.info.modality}"
        )
    artifact = open_model(ctx.input("model"))
    model = artifact.build().to(device)
    if not hasattr(model, "dims"):
        raise RunError(
            f"model {artifact.meta['model']['name']!r} is not a forecasting network "
            "(torchkiln.forecast.nets.ForecastNet)"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise RunError("every parameter is frozen; nothing to train (check build_model's freeze)")
    loss_fn = loss_of(cfg, model).to(device)
    model = distributed.wrap(model, cfg.distributed, group, device)
    optimizer = cfg.optimizer.build([p for p in model.parameters() if p.requires_grad])
    train = resident(data.split("train"), device)
    if len(train) == 0:
        raise RunError("the training split has no windows")
    val = resident(data.split("val"), device) if data.count("val") else None
    scheduler = None
    if cfg.scheduler is not None:
        if cfg.scheduler.needs_metric and val is None:
            raise RunError(f"{cfg.scheduler.name} needs validation windows; set split.val > 0")
        steps = math.ceil(len(train) / cfg.batch_size)
        scheduler = cfg.scheduler.build(optimizer, steps, cfg.epochs, mode="min")
    preprocess = preprocessor_for(data.info, None).to(device)
    assert isinstance(preprocess, SeriesPreprocessor)
    steps = ForecastSteps(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=loss_fn,
        preprocess=preprocess,
        device=device,
        cfg=cfg,
        val=val,
        group=group,
    )
    return steps, train


def selection_of(steps: ForecastSteps) -> Selection:
    """The epoch with the best validation loss; without validation windows, the last one."""
    cfg = steps.cfg
    if steps.val is None:
        log("no validation span: the last epoch is kept")
    return Selection(
        monitor="val_loss" if steps.val is not None else "train_loss",
        keep_last=steps.val is None,
        min_delta=cfg.early_stopping.min_delta if cfg.early_stopping else 0.0,
        patience=cfg.early_stopping.patience if cfg.early_stopping else None,
    )


def run_train_forecast(ctx: StageContext) -> None:
    steps, result = run_training(
        ctx, build_forecast_steps, plan_of(ctx.config), selection_of, write_outputs
    )
    monitor = "val_loss" if steps.val is not None else "train_loss"
    log(f"best epoch {result.best_epoch}: {monitor} {result.best_value:.4f}")


def write_outputs(ctx: StageContext, steps: ForecastSteps, result: FitResult, group: Group) -> None:
    """The trained forecaster (the selected epoch's weights), metrics and the history."""
    cfg = ctx.config
    artifact = open_model(ctx.input("model"))
    training: dict[str, Any] = {
        "kind": "forecast",
        "best_epoch": result.best_epoch,
        "monitor": "val_loss" if steps.val is not None else "train_loss",
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "loss": (cfg.loss or (Pinball() if steps.plain_model.quantiles else Mse())).name,
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
    summary = {k: v for k, v in result.best_record.items() if k != "epoch"}
    write_json(
        ctx.metrics_path,
        {**summary, "best_epoch": result.best_epoch, "epochs_run": len(result.history)},
    )
    ctx.plots_dir.mkdir(parents=True, exist_ok=True)
    write_json(ctx.plots_dir / "history.json", result.history)
