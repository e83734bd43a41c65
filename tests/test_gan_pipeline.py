"""A tiny GAN pipeline through the real `kiln run` (with a tiny classifier pipeline for its
evaluation), its export, `kiln sample`, resuming train_gan, the mode-collapse warning on a
collapsed and a healthy generator, and the validation errors."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
from cli_tools import failed, kiln, ok, shared_folder, synthetic, write_spec

from torchkiln.io import read_json

pytestmark = pytest.mark.e2e

DATA = {"dataset": synthetic(num_classes=4, per_class=40, size=8), "split": {"test": 0.25}}


def gan_stages(**train: Any) -> dict[str, Any]:
    return {
        "load_data": DATA,
        "build_model": {"model": {"name": "mlp_gan", "latent_dim": 8, "hidden": [32]}},
        "train": {"epochs": 2, "batch_size": 16, "ema": {"decay": 0.9}, "samples": 16, **train},
        "evaluate": {"classifier": {"pipeline": "cls", "stage": "train"}, "grid": 16},
        "export": {"formats": ["torchscript", "onnx", "safetensors"], "check_batch": 6},
    }


def write_specs(folder: Path) -> None:
    write_spec(
        folder,
        "cls",
        {
            "load_data": DATA,
            "build_model": {"model": {"name": "mlp", "hidden": [16]}},
            "train": {"epochs": 2, "batch_size": 32},
        },
    )
    write_spec(folder, "gan", gan_stages(), task="gan")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The classifier pipeline, then the GAN pipeline through export."""

    def build(folder: Path) -> None:
        write_specs(folder)
        ok(kiln("run", "cls.yaml", cwd=folder))
        ok(kiln("run", "gan.yaml", cwd=folder))

    return shared_folder(tmp_path_factory, "gan-project", build)


def test_train_gan_writes_diagnostics_sample_grids_and_history(project: Path) -> None:
    train = project / "runs" / "gan" / "train"
    history = read_json(train / "plots" / "history.json")
    assert [r["epoch"] for r in history] == [1, 2]
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "grad_norm_d", "grad_norm_g"):
        assert all(isinstance(r[key], float) for r in history), key
    assert 0 <= history[0]["d_real"] <= 1  # BCE: D(x) is a probability
    plots = sorted(p.relative_to(train / "plots").as_posix() for p in train.rglob("plots/**/*.*"))
    assert plots == [
        "contact_sheet.png",
        "history.json",
        "samples/epoch_001.png",
        "samples/epoch_002.png",
    ]
    # what the kind declares to DVC is exactly what it wrote
    from torchkiln.schemas.spec import load_pipeline

    node = load_pipeline(project / "gan.yaml").stages["train"]
    assert node.kind.name == "train_gan"  # from the gan task's stage_defaults
    declared = {p.file for p in node.plot_specs()}
    assert declared == {"history.json", "samples", "contact_sheet.png"}
    assert (train / "out" / "history.json").read_bytes() == (
        train / "plots" / "history.json"
    ).read_bytes()
    meta = read_json(train / "out" / "model.json")
    assert meta["training"]["generator_weights"] == "ema"
    assert read_json(train / "metrics.json")["epochs_run"] == 2


def test_evaluate_gan_scores_generated_real_and_noise(project: Path) -> None:
    evaluate = project / "runs" / "gan" / "evaluate"
    metrics = read_json(evaluate / "metrics.json")
    assert metrics == read_json(evaluate / "out" / "metrics.json")
    for what in ("generated", "real", "noise"):
        assert metrics[f"fid_{what}"] >= 0
        assert 0 <= metrics[f"diversity_{what}"] <= 1
        assert metrics[f"classifier_score_{what}"] >= 1
    assert metrics["fid_real"] < metrics["fid_noise"]
    assert metrics["samples"] == metrics["held_out"] == 40
    assert (evaluate / "plots" / "samples.png").exists()
    classes = read_json(evaluate / "plots" / "classes.json")
    assert [c["class"] for c in classes] == ["class_0", "class_1", "class_2", "class_3"]


def test_export_is_the_generator_with_parity_and_a_card(project: Path) -> None:
    """The TorchScript file, the ONNX file (onnxruntime) and the model rebuilt from
    model.json + model.safetensors sample what the trained (EMA) generator samples, at batch
    sizes the export did not check."""
    import numpy as np
    import onnxruntime
    import torch
    from safetensors.torch import load_file

    from torchkiln.runtime.model_artifact import open_model

    out = project / "runs" / "gan" / "export" / "out"
    card = read_json(out / "model_card.json")
    assert card["latent_dim"] == 8 and card["output_shape"] == [1, 8, 8]
    assert card["inputs"] == ["noise"] and card["outputs"] == ["images"]
    assert {f["format"] for f in card["files"]} >= {"torchscript", "onnx", "safetensors"}
    evaluation = read_json(project / "runs" / "gan" / "evaluate" / "metrics.json")
    assert card["warnings"] == evaluation["warnings"]
    markdown = (out / "model_card.md").read_text()
    assert "fid_generated" in markdown and "over 0 classes" not in markdown
    assert '"noise": noise.numpy()' in markdown

    generator = open_model(project / "runs" / "gan" / "train" / "out").build().generator.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream
        script = torch.jit.load(str(out / "model.pt"))
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    rebuilt = open_model(out).build(load_weights=False)
    rebuilt.load_state_dict(load_file(out / "model.safetensors"))
    rebuilt = rebuilt.generator.eval()
    for batch in (1, 3, 40):
        noise = torch.randn(batch, 8, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = generator(noise).numpy()
            scripted = script(noise).numpy()
            again = rebuilt(noise).numpy()
        (onnx,) = session.run(None, {"noise": noise.numpy()})
        assert expected.shape == (batch, 1, 8, 8)
        assert expected.min() >= 0 and expected.max() <= 1
        for name, got, atol in [("torchscript", scripted, 1e-5), ("onnx", onnx, 1e-4),
                                ("safetensors", again, 1e-6)]:  # fmt: skip
            np.testing.assert_allclose(got, expected, atol=atol, rtol=0, err_msg=name)


def test_kiln_sample_writes_a_png_grid(project: Path, tmp_path: Path) -> None:
    from PIL import Image

    grid = tmp_path / "grid.png"
    result = ok(kiln("sample", "gan.yaml", "-n", "6", "-o", grid, "--seed", "3", cwd=project))
    assert "6 samples" in result.stdout
    picture = Image.open(grid)
    # 6 tiles in a 3 x 2 grid of 8x8 images with 2-pixel padding, upscaled 12x
    assert picture.size == ((3 * 10 + 2) * 12, (2 * 10 + 2) * 12)
    again = tmp_path / "again.png"
    ok(kiln("sample", "gan.yaml", "-n", "6", "-o", again, "--seed", "3", cwd=project))
    assert again.read_bytes() == grid.read_bytes()
    script = tmp_path / "script.png"
    ok(kiln("sample", "gan.yaml", "-n", "6", "-o", script, "--seed", "4", cwd=project))
    assert script.read_bytes() != grid.read_bytes()


def test_kiln_sample_loads_torchscript_only_when_asked(project: Path, tmp_path: Path) -> None:
    """A generator from someone else is safe to sample by default: ONNX, never a silent
    fall back to TorchScript (loading it runs the program it holds)."""
    project = Path(shutil.copytree(project, tmp_path / "project"))  # the shared one stays as is
    out = project / "runs/gan/export/out"
    grid, again = tmp_path / "grid.png", tmp_path / "again.png"
    ok(kiln("sample", "gan.yaml", "-n", "4", "-o", grid, cwd=project))
    (out / "model.onnx").rename(tmp_path / "model.onnx")
    message = failed(kiln("sample", "gan.yaml", "-n", "4", "-o", tmp_path / "x.png", cwd=project))
    assert message.startswith(
        "error: runs/gan/export/out/model.onnx does not exist, and kiln does not fall back to "
        "runs/gan/export/out/model.pt on its own: TorchScript runs the code it holds"
    ), message
    assert "--format torchscript" in message and not (tmp_path / "x.png").exists()
    script = tmp_path / "script.png"
    ok(kiln("sample", "gan.yaml", "-n", "4", "-o", script, "--format", "torchscript", cwd=project))
    assert script.exists()
    (tmp_path / "model.onnx").rename(out / "model.onnx")
    (out / "model.pt").write_bytes(b"not a TorchScript archive")  # never opened by default
    ok(kiln("sample", "gan.yaml", "-n", "4", "-o", again, cwd=project))
    assert again.read_bytes() == grid.read_bytes()


def test_kiln_sample_before_export_and_on_a_classifier_says_why(tmp_path: Path) -> None:
    write_specs(tmp_path)
    message = failed(kiln("sample", "gan.yaml", "-o", tmp_path / "x.png", cwd=tmp_path))
    assert "not exported yet" in message and "kiln run gan.yaml" in message
    assert not (tmp_path / "x.png").exists()
    message = failed(kiln("sample", "cls.yaml", cwd=tmp_path), code=2)
    assert "no export stage" in message


def test_resumed_train_gan_reaches_identical_weights(project: Path, tmp_path: Path) -> None:
    """A run interrupted after epoch 2 and resumed equals an uninterrupted run, byte for byte
    (n_critic 2 and the EMA make the step counting and the averaged state matter)."""
    from torchkiln.gan import train as gan_train
    from torchkiln.gan.stages import TrainGanConfig
    from torchkiln.gan.task import Gan
    from torchkiln.runtime.context import StageContext

    config = TrainGanConfig.model_validate(
        {"epochs": 4, "batch_size": 16, "n_critic": 2, "ema": {"decay": 0.9}, "samples": 4}
    )

    def context(name: str, scratch: Path) -> StageContext:
        root = tmp_path / name
        (root / "out").mkdir(parents=True, exist_ok=True)
        return StageContext(
            pipeline="gan",
            stage="train",
            config=config,
            seed=0,
            task=Gan(),
            device="cpu",
            inputs={
                "dataset": project / "runs" / "gan" / "load_data" / "out",
                "model": project / "runs" / "gan" / "build_model" / "out",
            },
            out_dir=root / "out",
            metrics_path=root / "metrics.json",
            plots_dir=root / "plots",
            scratch_dir=scratch,
        )

    gan_train.run_train_gan(context("straight", tmp_path / "scratch-a"))

    original = gan_train.GanSteps.start_epoch

    def crash_at_third_epoch(self: Any, epoch: int) -> Any:
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch)

    gan_train.GanSteps.start_epoch = crash_at_third_epoch  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            gan_train.run_train_gan(context("killed", tmp_path / "scratch-b"))
    finally:
        gan_train.GanSteps.start_epoch = original  # type: ignore[method-assign]
    assert list((tmp_path / "scratch-b").glob("*.pt"))  # the checkpoint after epoch 2
    gan_train.run_train_gan(context("resumed", tmp_path / "scratch-b"))

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for name in ("out/weights.safetensors", "out/history.json", "plots/contact_sheet.png"):
        assert (straight / name).read_bytes() == (resumed / name).read_bytes(), name
    assert not list((tmp_path / "scratch-b").glob("*.pt"))  # cleared after success


# -- mode collapse -----------------------------------------------------------------------

#: A test GAN model: its generator replays training images picked by the noise (as varied
#: as real images: healthy by every score) or, with `constant: true`, ignores the noise
#: and always makes the same one (collapsed). `gain` gives train_gan a parameter to step;
#: it has no effect on the images.
REPLAY_PLUGIN = """\
from typing import Literal

from torchkiln.gan.models import GanModelConfig
from torchkiln.registry import models


@models.register
class ReplayGan(GanModelConfig):
    name: Literal["replay_gan"] = "replay_gan"
    latent_dim: int = 8
    constant: bool = False

    def build(self, info):
        import math

        import torch
        from torch import nn

        from torchkiln.gan.nets import GanModel

        class Replay(nn.Module):
            def __init__(self, count, shape, constant):
                super().__init__()
                self.register_buffer("bank", torch.zeros(count, *shape))
                self.gain = nn.Parameter(torch.ones(()))
                self.constant = constant

            def forward(self, noise):
                if self.constant:
                    index = torch.zeros(noise.shape[0], dtype=torch.long)
                else:
                    picked = (noise[:, 0].abs() * 1009).long()
                    index = torch.remainder(picked, self.bank.shape[0])
                return self.bank[index] + 0 * self.gain

        class Critic(nn.Module):
            def __init__(self, size):
                super().__init__()
                self.net = nn.Sequential(nn.Flatten(), nn.Linear(size, 1))

            def forward(self, x):
                return self.net(x).squeeze(1)

        shape = tuple(info.input_shape)
        generator = Replay(info.counts["train"], shape, self.constant)
        return GanModel(generator, Critic(math.prod(shape)), self.latent_dim, shape)

    def initialize(self, module, dataset):
        import torch

        split = dataset.split("train")
        (images,), _ = split.batch(torch.arange(len(split)))
        module.generator.bank.copy_(images.float() / 255)
        return {"replayed": len(split)}
"""


def judged_stages() -> dict[str, Any]:
    """Two replay generators side by side, each trained, evaluated and exported."""
    stages: dict[str, Any] = {"load_data": DATA}
    for kind, constant in (("healthy", False), ("collapsed", True)):
        stages[f"{kind}_model"] = {
            "uses": "build_model",
            "model": {"name": "replay_gan", "constant": constant},
        }
        stages[f"{kind}_train"] = {
            "uses": "train_gan",
            "inputs": {"model": f"{kind}_model"},
            "epochs": 1,
            "batch_size": 32,
            "samples": 4,
        }
        stages[f"{kind}_evaluate"] = {
            "uses": "evaluate_gan",
            "inputs": {"model": f"{kind}_train"},
            "classifier": {"pipeline": "cls", "stage": "train"},
            "grid": 0,
        }
        stages[f"{kind}_export"] = {
            "uses": "export",
            "inputs": {"model": f"{kind}_train", "evaluation": f"{kind}_evaluate"},
            "formats": ["safetensors"],
        }
    return stages


def stage_logs(stderr: str) -> dict[str, str]:
    """`kiln run`'s output, split at its `== pipeline: stage (kind) ==` headers."""
    parts = re.split(r"^== judged: (\w+) \(\w+\) ==$", stderr, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_a_collapsed_generator_is_warned_about_and_a_healthy_one_is_not(
    project: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "judged"
    shutil.copytree(project, folder, ignore=shutil.ignore_patterns(".kiln"))
    (folder / "replay_gan.py").write_text(REPLAY_PLUGIN)
    write_spec(folder, "judged", judged_stages(), task="gan", plugins=["replay_gan.py"])
    logs = stage_logs(ok(kiln("run", "judged.yaml", cwd=folder)).stderr)
    runs = folder / "runs" / "judged"

    collapsed = read_json(runs / "collapsed_evaluate" / "metrics.json")
    assert collapsed["diversity_generated"] == 0.0 and collapsed["spread_ratio"] == 0.0
    assert collapsed["mode_collapse"] is True and collapsed["divergence"] is False
    real = collapsed["diversity_real"]
    assert collapsed["warnings"] == [
        f"mode collapse: the generated images' class diversity 0.000 is below 0.8 x the real "
        f"images' {real:.3f} (some classes are rarely or never generated)",
        "mode collapse: the generated images' feature spread is 0.00 of the real images' "
        "(below 0.5): the samples look alike",
    ]
    card = read_json(runs / "collapsed_export" / "out" / "model_card.json")
    assert card["warnings"] == collapsed["warnings"]
    markdown = (runs / "collapsed_export" / "out" / "model_card.md").read_text()
    assert "## Warnings" in markdown
    for warning in collapsed["warnings"]:
        assert f"- **warning:** {warning}" in markdown
        assert f"warning: {warning}" in logs["collapsed_evaluate"]

    healthy = read_json(runs / "healthy_evaluate" / "metrics.json")
    assert healthy["diversity_generated"] >= 0.8 * healthy["diversity_real"]
    assert healthy["spread_ratio"] >= 0.5
    assert healthy["fid_scaled"] < 0.1  # as close to the train images as held-out real ones
    assert healthy["mode_collapse"] is False and healthy["warnings"] == []
    assert read_json(runs / "healthy_export" / "out" / "model_card.json")["warnings"] == []
    markdown = (runs / "healthy_export" / "out" / "model_card.md").read_text()
    assert "## Warnings" not in markdown and "mode collapse:" not in markdown
    assert "- mode_collapse: False" in markdown
    assert "warning" not in logs["healthy_evaluate"]


# -- validation ------------------------------------------------------------------------


def issues(folder: Path, spec: Path) -> str:
    result = kiln("validate", spec.name, cwd=folder)
    assert result.returncode == 2, result.stdout + result.stderr
    return result.stderr


def test_gan_kinds_refuse_the_classification_task(tmp_path: Path) -> None:
    stages = gan_stages()
    stages["train"]["uses"] = "train_gan"
    stages["evaluate"]["uses"] = "evaluate_gan"
    del stages["build_model"]
    stages["build_model"] = {"model": {"name": "mlp", "hidden": [8]}}
    spec = write_spec(tmp_path, "wrong", stages)
    text = issues(tmp_path, spec)
    assert "wrong.yaml:" in text
    assert "stage kind 'train_gan' serves task(s) gan, not 'classification'" in text
    assert "stage kind 'evaluate_gan' serves task(s) gan" in text


def test_gan_model_refused_for_classification_and_vice_versa(tmp_path: Path) -> None:
    stages = {
        "load_data": DATA,
        "build_model": {"model": {"name": "dcgan", "widths": [8]}},
        "train": {"epochs": 1},
    }
    text = issues(tmp_path, write_spec(tmp_path, "clf", stages))
    assert "stages.build_model.model.name: model 'dcgan' serves gan, not task 'classification'" in (
        text
    )
    stages = gan_stages()
    stages["build_model"] = {"model": {"name": "small_cnn"}}
    spec = write_spec(tmp_path, "gan", stages, task="gan")
    text = issues(tmp_path, spec)
    lines = text.splitlines()
    assert any(
        "stages.build_model.model.name: model 'small_cnn' serves classification" in x for x in lines
    )
    assert any("stages.train: stage kind 'train_gan' needs a GAN model" in x for x in lines)
    assert any("stages.evaluate: stage kind 'evaluate_gan' needs a GAN model" in x for x in lines)
    # every message is positioned: file:line:col
    assert all(line.startswith("gan.yaml:") for line in lines if "needs a GAN model" in line)


def test_gan_config_errors_are_positioned(tmp_path: Path) -> None:
    stages = gan_stages(
        loss={"name": "hinj"},
        generator={"scheduler": {"name": "ReduceLROnPlateau"}},
    )
    del stages["evaluate"]["classifier"]
    text = issues(tmp_path, write_spec(tmp_path, "bad", stages, task="gan"))
    assert "stages.train.loss.name: unknown gan_loss 'hinj'; did you mean 'hinge'?" in text
    assert "stages.evaluate.classifier" in text
    # (the scheduler check runs once the config itself is valid)
    stages = gan_stages(generator={"scheduler": {"name": "ReduceLROnPlateau"}})
    text = issues(tmp_path, write_spec(tmp_path, "plateau", stages, task="gan"))
    assert "stages.train.generator.scheduler.name: ReduceLROnPlateau steps on a validation" in text
