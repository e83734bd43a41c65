"""Bad specs through the real `kiln validate`: exit 2, one `file:line:col: path: message` line
per problem, at the right place, with a did-you-mean where one fits, and never a traceback.

Each case writes its files into a fresh temporary directory and runs `kiln validate` there,
so every position below was checked by hand against the exact text of the case (lines and
columns are 1-based, as editors show them). An expectation reads like the output line it
matches: `"spec.yaml:7:13: stages.train.epochs: Input should ..."` means a line starting with
`spec.yaml:7:13: ` contains the rest. Each case also says how many lines there are: no
problem may be reported twice or drag spurious follow-up errors along.
"""

from __future__ import annotations

import re
import resource
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_tools import kiln

ISSUE_LINE = re.compile(r"^(?P<where>[^\s:]+:\d+:\d+): (?P<rest>.*)$")


def spec(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


@dataclass
class Case:
    id: str
    files: dict[str, str | bytes]
    #: `file:line:col: message fragment`, one per expected output line.
    expect: list[str]
    #: spec files given to `kiln validate`, in order (default: every .yaml file written)
    args: list[str] | None = None


def bad(id: str, text: str | bytes, *expect: str, name: str = "spec.yaml", **kw) -> Case:
    """A case made of one spec file."""
    content = spec(text) if isinstance(text, str) else text
    return Case(id, {name: content}, list(expect), **kw)


def bad_files(id: str, files: dict[str, str], *expect: str, **kw) -> Case:
    """A case made of several files (plugins, several specs)."""
    return Case(id, files, list(expect), **kw)


# A valid start of a pipeline used by many cases (lines 1-5); cases append from line 6.
HEAD = """\
stages:
  load_data:
    dataset: mnist_sample
  build_model:
    model: mlp
"""

# Four lines: a spec that loads one plugin file (line 1, the entry at column 11).
PLUGGED = "plugins: [{}]\nstages:\n  load_data:\n    dataset: mnist_sample\n"

PRUNE_PLUGIN = spec('''
    """A plugin stage kind that turns a trained model into a model to train again."""
    from torchkiln.registry import stages
    from torchkiln.stages.base import Slot, StageConfig, StageKind


    class PruneConfig(StageConfig):
        amount: float = 0.5


    @stages.register
    class Prune(StageKind):
        """Prune a trained model."""

        name = "prune"
        config = PruneConfig
        consumes = {"model": Slot("trained_model")}
        produces = "model"

        def run(self, ctx):
            raise NotImplementedError("validation never runs a stage")
''')

DUPLICATE_MLP_PLUGIN = spec("""
    from typing import Literal

    from torchkiln.registry import ModelConfig, models


    @models.register
    class MyMlp(ModelConfig):
        name: Literal["mlp"] = "mlp"
""")

TINY_PLUGIN = spec("""
    from typing import Literal

    from torchkiln.registry import ModelConfig, models


    @models.register
    class Tiny(ModelConfig):
        name: Literal["tiny"] = "tiny"

        def build(self, info):
            raise NotImplementedError("validation never builds")
""")


def billion_laughs() -> str:
    """9 ** 9 (387 million) strings from ten short lines."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    lines.append("stages: {load_data: {dataset: mnist_sample}}")
    return "\n".join(lines) + "\n"


CASES = [
    # ------------------------------------------------------------------ the YAML itself
    bad(
        "yaml_syntax",
        """
        stages:
          train: {epochs: 3
          evaluate: {}
        """,
        "spec.yaml:3:11: invalid YAML: expected ',' or '}', but got ':'",
    ),
    bad(
        "yaml_unclosed_quote",
        """
        name: "demo
        stages: {}
        """,
        "spec.yaml:3:1: invalid YAML: found unexpected end of stream",
    ),
    bad(
        "duplicate_key",
        """
        stages:
          load_data:
            dataset: mnist_sample
          train:
            epochs: 3
            epochs: 4
        """,
        "spec.yaml:6:5: duplicate key 'epochs' (first defined at line 5); YAML would silently",
    ),
    bad(
        "duplicate_stage",
        """
        stages:
          load_data: {dataset: mnist_sample}
          load_data: {dataset: sklearn_digits}
        """,
        "spec.yaml:3:3: duplicate key 'load_data' (first defined at line 2)",
    ),
    bad(
        "tab_indentation",
        "stages:\n  load_data:\n\tdataset: mnist_sample\n",
        "spec.yaml:3:1: invalid YAML: a tab character here; YAML indents with spaces only",
    ),
    bad(
        "invalid_utf8",
        b"# a spec\nname: caf\xe9\nstages: {load_data: {dataset: mnist_sample}}\n",
        "spec.yaml:2:10: the file is not valid UTF-8 (byte 0xe9)",
    ),
    bad("empty_file", "", "spec.yaml:1:1: the spec is empty; expected a mapping with 'stages'"),
    bad("only_comments", "# nothing yet\n\n", "spec.yaml:1:1: the spec is empty"),
    bad(
        "root_is_list",
        "- load_data\n- train\n",
        "spec.yaml:1:1: the top level must be a mapping with 'stages' (got a list)",
    ),
    bad(
        "root_is_scalar",
        "42\n",
        "spec.yaml:1:1: the top level must be a mapping with 'stages' (got an int)",
    ),
    bad(
        "python_tag",
        """
        name: demo
        seed: !!python/object/apply:os.system ["echo pwned > pwned.txt"]
        stages:
          load_data:
            dataset: mnist_sample
        """,
        "spec.yaml:2:7: tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed",
    ),
    bad(
        "custom_tag",
        """
        stages:
          load_data:
            dataset: !env DATASET
        """,
        "spec.yaml:3:14: tag '!env' is not allowed; only plain YAML values are",
    ),
    # The limit trips inside the anchored list `a` (its 2nd item), whose nodes every alias shares.
    bad(
        "alias_bomb",
        billion_laughs(),
        "spec.yaml:1:15: the document expands to more than 100000 values through aliases",
    ),
    bad(
        "too_deep",
        "x: " + "[" * 150 + "]" * 150 + "\nstages: {}\n",
        "spec.yaml:1:104: the document nests deeper than 100 levels",  # the 101st `[`
    ),
    bad(
        "multi_document",
        """
        stages:
          load_data:
            dataset: mnist_sample
        ---
        stages: {}
        """,
        "spec.yaml:4:1: invalid YAML: the file holds more than one YAML document",
    ),
    # ------------------------------------------------------------------ types and bounds
    bad(
        "epochs_string",
        HEAD + '  train:\n    epochs: "10"\n',
        "spec.yaml:7:13: stages.train.epochs: Input should be a valid integer (got '10')",
    ),
    bad(
        "epochs_bool",
        HEAD + "  train:\n    epochs: true\n",
        "spec.yaml:7:13: stages.train.epochs: Input should be a valid integer (got true)",
    ),
    bad(
        "epochs_float",
        HEAD + "  train:\n    epochs: 2.5\n",
        "spec.yaml:7:13: stages.train.epochs: Input should be a valid integer (got 2.5)",
    ),
    bad(
        "batch_size_exponent_is_float",  # YAML 1.2: 1e3 is a float, as DVC reads it too
        HEAD + "  train:\n    batch_size: 1e3\n",
        "spec.yaml:7:17: stages.train.batch_size: Input should be a valid integer (got 1000.0)",
    ),
    bad(
        "negative_lr",
        HEAD + "  train:\n    optimizer: {name: AdamW, lr: -0.1}\n",
        "spec.yaml:7:34: stages.train.optimizer.lr: Input should be greater than 0 (got -0.1)",
    ),
    bad(
        "epochs_zero",
        HEAD + "  train:\n    epochs: 0\n",
        "spec.yaml:7:13: stages.train.epochs: Input should be greater than or equal to 1 (got 0)",
    ),
    bad(
        "nan_value",
        HEAD + "  train:\n    clip_grad_norm: .nan\n",
        "spec.yaml:7:21: stages.train.clip_grad_norm: Input should be a finite number (got nan)",
    ),
    bad(
        "inf_value",
        """
        stages:
          load_data:
            dataset: mnist_sample
            split: {val: .inf}
        """,
        "spec.yaml:4:18: stages.load_data.split.val: Input should be a finite number (got inf)",
    ),
    bad(
        "generic_adapter_nan",
        HEAD + "  train:\n    optimizer: {name: NAdam, lr: .nan}\n",
        "spec.yaml:7:34: stages.train.optimizer.lr: lr must be a finite number",
    ),
    bad(
        "split_leaves_nothing",
        """
        stages:
          load_data:
            dataset: mnist_sample
            split: {val: 0.5, test: 0.5}
        """,
        "spec.yaml:4:12: stages.load_data.split: val + test must leave examples to train on "
        "(got 0.5 + 0.5)",
    ),
    bad(
        "seed_and_device",
        """
        seed: -1
        device: gpu
        stages:
          load_data:
            dataset: mnist_sample
        """,
        "spec.yaml:1:7: seed: Input should be greater than or equal to 0 (got -1)",
        "spec.yaml:2:9: device: String should match pattern",
    ),
    bad(
        "plugins_not_a_list",
        """
        plugins: my_models
        stages:
          load_data:
            dataset: mnist_sample
        """,
        "spec.yaml:1:10: plugins: Input should be a valid list (got 'my_models')",
    ),
    bad(
        "stages_empty",
        "stages: {}\n",
        "spec.yaml:1:9: stages: Dictionary should have at least 1 item",
    ),
    bad("stages_missing", "name: demo\n", "spec.yaml:1:1: stages: missing required key 'stages'"),
    bad(
        "stage_not_a_mapping",
        "stages:\n  load_data: mnist_sample\n",
        "spec.yaml:2:14: stages.load_data: Input should be a valid dictionary (got 'mnist_sample')",
    ),
    # ------------------------------------------------------------------ unknown keys, each depth
    bad(
        "unknown_top_level_key",
        """
        sead: 1
        stages:
          load_data:
            dataset: mnist_sample
        """,
        "spec.yaml:1:1: sead: unknown key 'sead'; did you mean 'seed'? "
        "valid keys: abstract, deterministic, device, extends, name, plugins, seed, stages, task",
    ),
    bad(
        "unknown_stage_key",
        HEAD + "  train:\n    epoch: 3\n",
        "spec.yaml:7:5: stages.train.epoch: unknown key 'epoch'; did you mean 'epochs'? "
        "valid keys: batch_size,",
    ),
    bad(
        "unknown_component_key",
        """
        stages:
          load_data:
            dataset: mnist_sample
          build_model:
            model: {name: small_cnn, chanels: [32, 64]}
        """,
        "spec.yaml:5:30: stages.build_model.model.chanels: unknown key 'chanels'; "
        "did you mean 'channels'? valid keys: batch_norm, channels,",
    ),
    bad(
        "unknown_nested_key",
        """
        stages:
          load_data:
            dataset: mnist_sample
            split:
              val: 0.1
              tset: 0.2
        """,
        "spec.yaml:6:7: stages.load_data.split.tset: unknown key 'tset'; did you mean 'test'? "
        "valid keys: stratify, test, val",
    ),
    bad(
        "unknown_key_no_close_match",
        """
        stages:
          load_data:
            dataset: {name: mnist_sample, colour: true}
        """,
        "spec.yaml:3:35: stages.load_data.dataset.colour: unknown key 'colour'; "
        "valid keys: classes, name, per_class",
    ),
    bad(
        "unknown_key_in_list_item",
        """
        stages:
          load_data:
            dataset: mnist_sample
          augment:
            train:
              - {name: RandomAffine, degree: 10}
        """,
        "spec.yaml:6:30: stages.augment.train[0].degree: unknown key 'degree'; "
        "did you mean 'degrees'?",
    ),
    # ------------------------------------------------------------------ stage kinds
    bad(
        "unknown_stage_kind",
        HEAD + "  evalute: {}\n",
        "spec.yaml:6:3: stages.evalute: no stage kind 'evalute'; did you mean 'evaluate' or "
        "'evaluate_gan'? "
        "name a kind with `uses:` (stage kinds: augment, build_model, evaluate,",
    ),
    bad(
        "unknown_uses",
        HEAD + "  fit:\n    uses: trian\n",
        "spec.yaml:7:11: stages.fit.uses: unknown stage kind 'trian'; did you mean 'train' or "
        "'train_gan'? "
        "known stage kinds: augment, build_model, evaluate, evaluate_forecast, evaluate_gan, "
        "export, load_data, load_series, train, train_forecast, train_gan",
    ),
    bad(
        "uses_not_a_string",
        HEAD + "  fit:\n    uses: [train]\n",
        "spec.yaml:7:11: stages.fit.uses: must be a stage kind name (got a list of 1)",
    ),
    # ------------------------------------------------------------------ registry names
    bad(
        "unknown_model",
        """
        stages:
          load_data:
            dataset: mnist_sample
          build_model:
            model: {name: small_cn}
        """,
        "spec.yaml:5:19: stages.build_model.model.name: unknown model 'small_cn'; "
        "did you mean 'small_cnn'? known models: dcgan, embedding_bag, gru, lstm, mlp, mlp_gan,",
    ),
    bad(
        "unknown_dataset",
        """
        stages:
          load_data:
            dataset: {name: mnist_smaple, per_class: 10}
        """,
        "spec.yaml:3:21: stages.load_data.dataset.name: unknown dataset 'mnist_smaple'; "
        "did you mean 'mnist_sample'? known datasets: bbc_news, bundled_series, csv_series, "
        "image_folder, mnist_sample,",
    ),
    bad(
        "unknown_optimizer_shorthand",  # the position is the misspelt word, not the key
        HEAD + "  train:\n    optimizer: Adamw\n",
        "spec.yaml:7:16: stages.train.optimizer.name: unknown optimizer 'Adamw'; "
        "did you mean 'AdamW' or 'Adam' or 'RAdam'? known optimizers: ASGD,",
    ),
    bad(
        "unknown_scheduler",
        HEAD + "  train:\n    scheduler: {name: StepLRR}\n",
        "spec.yaml:7:23: stages.train.scheduler.name: unknown scheduler 'StepLRR'; "
        "did you mean 'StepLR' or 'MultiStepLR'?",
    ),
    bad(
        "unknown_transform",
        """
        stages:
          load_data:
            dataset: mnist_sample
          augment:
            train: [RandomHorizontalFlip, {name: RandomAfine, degrees: 5}]
        """,
        "spec.yaml:5:42: stages.augment.train[1].name: unknown transform 'RandomAfine'; "
        "did you mean 'RandomAffine'",
    ),
    bad(
        "unknown_metric",
        """
        stages:
          evaluate:
            metrics: [accuracy, f1_macr]
        """,
        "spec.yaml:3:25: stages.evaluate.metrics[1].name: unknown metric 'f1_macr'; "
        "did you mean 'f1_macro'? known metrics: accuracy, confusion_matrix, f1_macro,",
    ),
    bad(
        "unknown_loss",
        HEAD + "  train:\n    loss: {name: CrossEntropyLos}\n",
        "spec.yaml:7:18: stages.train.loss.name: unknown loss 'CrossEntropyLos'; did you mean "
        "'CrossEntropyLoss' or 'LinearCrossEntropyLoss'? known losses: BCELoss,",
    ),
    bad(
        "unknown_exporter",
        """
        stages:
          export:
            formats: [torchscript, onx]
        """,
        "spec.yaml:3:28: stages.export.formats[1].name: unknown exporter 'onx'; "
        "did you mean 'onnx'? known exporters: onnx, safetensors, torchscript",
    ),
    bad(
        "unknown_task",
        """
        name: demo
        task: clasification
        stages:
          load_data:
            dataset: mnist_sample
        """,
        "spec.yaml:2:7: task.name: unknown task 'clasification'; did you mean 'classification'?",
    ),
    bad(
        "component_missing_name",
        """
        stages:
          load_data:
            dataset: {per_class: 10}
        """,
        "spec.yaml:3:14: stages.load_data.dataset: missing 'name': which dataset? choose one of",
    ),
    bad(
        "component_not_a_mapping",
        HEAD + "  train:\n    scheduler: 5\n",
        "spec.yaml:7:16: stages.train.scheduler: expected a scheduler name or a mapping with a "
        "'name' key (got 5)",
    ),
    bad(
        "component_name_not_a_string",
        HEAD + "  train:\n    optimizer: {name: 3}\n",
        "spec.yaml:7:23: stages.train.optimizer.name: an optimizer name must be a string (got 3)",
    ),
    bad(
        "generic_unknown_kwarg",
        HEAD + "  train:\n    optimizer: {name: NAdam, lrr: 1}\n",
        "spec.yaml:7:35: stages.train.optimizer.lrr: NAdam has no parameter 'lrr'; "
        "did you mean 'lr'? its parameters: lr, betas, eps,",
    ),
    bad(
        "generic_missing_kwarg",  # a missing key is reported at the key of its mapping
        HEAD + "  train:\n    scheduler: {name: ExponentialLR}\n",
        "spec.yaml:7:5: stages.train.scheduler.gamma: missing required key 'gamma'",
    ),
    bad(
        "generic_transform_missing_kwarg",  # ... or at the list item
        """
        stages:
          load_data:
            dataset: mnist_sample
          augment:
            eval: [{name: Resize}]
        """,
        "spec.yaml:5:12: stages.augment.eval[0].size: missing required key 'size'",
    ),
    # ------------------------------------------------------------------ required fields, names
    bad(
        "missing_required_field",
        """
        stages:
          load_data:
            dataset: mnist_sample
          build_model:
            freeze: []
        """,
        "spec.yaml:4:3: stages.build_model.model: missing required key 'model'",
    ),
    bad(
        "bad_pipeline_name",
        """
        name: My-Pipe
        stages:
          load_data:
            dataset: mnist_sample
        """,
        "spec.yaml:1:7: name: String should match pattern '^[a-z0-9_]+$' (got 'My-Pipe')",
    ),
    bad(
        "bad_file_stem",
        "stages:\n  load_data:\n    dataset: mnist_sample\n",
        "My-Pipe.yaml:1:1: name: pipeline name 'My-Pipe' comes from the file name but may only "
        "use a-z, 0-9 and _",
        name="My-Pipe.yaml",
    ),
    bad(
        "bad_stage_name",
        """
        stages:
          Load-Data:
            uses: load_data
            dataset: mnist_sample
        """,
        "spec.yaml:2:3: stages.Load-Data: invalid key 'Load-Data': String should match pattern "
        "'^[a-z][a-z0-9_]*$'",
    ),
    bad(
        "null_stage_name",
        """
        stages:
          load_data:
            dataset: mnist_sample
          null: {}
        """,
        "spec.yaml:4:3: stages.None: invalid key null: Input should be a valid string",
    ),
    bad(
        "weights_two_sources",
        """
        stages:
          load_data:
            dataset: mnist_sample
          build_model:
            model: mlp
            weights: {path: init.pt, pipeline: other, stage: train}
        """,
        "spec.yaml:6:14: stages.build_model.weights: give either `path:` or `pipeline:` with "
        "`stage:`",
    ),
    bad(
        "weights_pipeline_without_stage",
        """
        stages:
          load_data:
            dataset: mnist_sample
          build_model:
            model: mlp
            weights:
              pipeline: other
        """,
        "spec.yaml:7:7: stages.build_model.weights: `pipeline:` and `stage:` go together",
    ),
    # ------------------------------------------------------------------ the graph
    bad_files(
        "cycle",  # no built-in kinds can form a cycle; a plugin kind (trained model -> model) can
        {
            "prune.py": PRUNE_PLUGIN,
            "spec.yaml": spec("""
                plugins: [prune.py]
                stages:
                  load_data:
                    dataset: mnist_sample
                  fit:
                    uses: train
                    inputs: {model: shrink}
                  shrink:
                    uses: prune
                    inputs: {model: fit}
            """),
        },
        "spec.yaml:7:13: stages.fit.inputs: the stage inputs form a cycle: fit -> shrink -> fit",
        args=["spec.yaml"],
    ),
    bad(
        "ambiguous_input",
        HEAD + "  small:\n    uses: build_model\n    model: small_cnn\n  train:\n    epochs: 2\n",
        "spec.yaml:9:3: stages.train: input 'model' is ambiguous: stages 'build_model', 'small' "
        "all produce 'model'; pick one with `inputs: {model: small}`",
    ),
    bad(
        "input_unknown_stage",
        HEAD + "  train:\n    inputs: {model: biuld_model}\n",
        "spec.yaml:7:21: stages.train.inputs.model: no stage 'biuld_model' in this pipeline; "
        "did you mean 'build_model'? stages: load_data, build_model, train",
    ),
    bad(
        "input_unknown_slot",
        HEAD + "  train:\n    inputs: {modle: build_model}\n",
        "spec.yaml:7:14: stages.train.inputs.modle: stage kind 'train' has no input 'modle'; "
        "did you mean 'model'? its inputs: dataset, model, transforms",
    ),
    bad(
        "input_wrong_artifact",
        HEAD + "  train: {}\n  evaluate:\n    inputs: {model: build_model}\n",
        "spec.yaml:8:21: stages.evaluate.inputs.model: stage 'build_model' produces 'model', "
        "but input 'model' takes 'trained_model'",
    ),
    bad(
        "missing_producer",
        """
        stages:
          build_model:
            model: mlp
          train: {}
        """,
        "spec.yaml:2:3: stages.build_model: stage kind 'build_model' needs a 'dataset' input, "
        "but no stage in this pipeline produces one",
        "spec.yaml:4:3: stages.train: stage kind 'train' needs a 'dataset' input",
    ),
    # ------------------------------------------------------------------ plugins
    bad(
        "plugin_missing_module",
        """
        plugins:
          - no_such_plugin_module
        stages:
          load_data:
            dataset: mnist_sample
        """,
        "spec.yaml:2:5: plugins[0]: cannot import plugin 'no_such_plugin_module': "
        "No module named 'no_such_plugin_module'",
    ),
    bad(
        "plugin_missing_file",
        PLUGGED.format("models/mine.py"),
        "spec.yaml:1:11: plugins[0]: plugin file 'models/mine.py' not found "
        "(looked for models/mine.py; file plugins are relative to the spec)",
    ),
    bad_files(
        "plugin_raises",
        {
            "bad_plugin.py": "import math\n\nraise ValueError('boom: %d' % math.floor(4.2))\n",
            "spec.yaml": PLUGGED.format("bad_plugin.py"),
        },
        "spec.yaml:1:11: plugins[0]: plugin 'bad_plugin.py' failed on import: "
        "ValueError: boom: 4 (at bad_plugin.py:3)",
    ),
    bad_files(
        "plugin_missing_dependency",
        {
            "needs.py": "x = 1\nimport not_installed_dependency_q\n",
            "spec.yaml": PLUGGED.format("needs.py"),
        },
        "spec.yaml:1:11: plugins[0]: plugin 'needs.py' failed on import: ModuleNotFoundError: "
        "No module named 'not_installed_dependency_q' (at needs.py:2)",
    ),
    bad_files(
        "plugin_calls_sys_exit",
        {"quits.py": "import sys\n\nsys.exit(0)\n", "spec.yaml": PLUGGED.format("quits.py")},
        "spec.yaml:1:11: plugins[0]: plugin 'quits.py' failed on import: SystemExit: 0 "
        "(at quits.py:3)",
    ),
    bad_files(
        "plugin_duplicate_of_builtin",
        {"dup.py": DUPLICATE_MLP_PLUGIN, "spec.yaml": PLUGGED.format("dup.py")},
        "spec.yaml:1:11: plugins[0]: plugin 'dup.py' failed on import: DuplicateNameError: "
        "model 'mlp' is already registered by torchkiln.vision.models; dup.py cannot register",
    ),
    bad_files(
        "plugin_duplicate_between_plugins",
        {
            "one.py": TINY_PLUGIN,
            "two.py": TINY_PLUGIN,
            "spec.yaml": "plugins:\n  - one.py\n  - two.py\n"
            "stages:\n  load_data:\n    dataset: mnist_sample\n",
        },
        "spec.yaml:3:5: plugins[1]: plugin 'two.py' failed on import: DuplicateNameError: "
        "model 'tiny' is already registered by one.py; two.py cannot register it again",
    ),
    # ------------------------------------------------------------------ kinds that do not fit
    bad(
        "gan_pipeline_uses_the_classifier_train",  # it used to fail only at run time
        """
        task: gan
        stages:
          load_data:
            dataset: mnist_sample
          build_model:
            model: dcgan
          train:
            uses: train
            epochs: 1
          judge:
            uses: evaluate
        """,
        "spec.yaml:8:11: stages.train.uses: stage kind 'train' is not for gan pipelines (their "
        "train stage kind is 'train_gan'): write `uses: train_gan` or leave `uses:` out",
        "spec.yaml:11:11: stages.judge.uses: stage kind 'evaluate' is not for gan pipelines "
        "(their evaluate stage kind is 'evaluate_gan'): write `uses: evaluate_gan`",
    ),
    bad(
        "augment_in_a_text_pipeline",  # it used to be accepted, and did nothing
        """
        stages:
          load_data:
            dataset: {name: text_table, path: data.csv}
          augment: {}
          build_model:
            model: rnn_classifier
        """,
        "spec.yaml:4:12: stages.augment: augment works on images only, and this dataset is "
        "text: its transforms, normalisation and preview would do nothing; remove the stage",
    ),
    bad(
        "image_transforms_in_a_text_pipeline",
        """
        stages:
          load_data:
            dataset: {name: text_table, path: data.csv}
          augment:
            train: [{name: RandomHorizontalFlip}]
        """,
        "spec.yaml:5:5: stages.augment: augment works on images only, and this dataset is text",
    ),
    # ------------------------------------------------------------------ many problems at once
    bad(
        "many_errors_at_once",
        """
        name: demo
        sead: 1
        stages:
          load_data:
            dataset: {name: mnist_smaple}
            split: {val: 0.5, test: 0.5}
          build_model:
            model: {name: small_cnn, chanels: [8]}
          train:
            epochs: true
            optimizer: {name: SGD, lr: -1}
          evalute: {}
          export:
            formats: [onx]
        """,
        "spec.yaml:2:1: sead: unknown key 'sead'; did you mean 'seed'?",
        "spec.yaml:5:21: stages.load_data.dataset.name: unknown dataset 'mnist_smaple'",
        "spec.yaml:6:12: stages.load_data.split: val + test must leave examples",
        "spec.yaml:8:30: stages.build_model.model.chanels: unknown key 'chanels'",
        "spec.yaml:10:13: stages.train.epochs: Input should be a valid integer (got true)",
        "spec.yaml:11:32: stages.train.optimizer.lr: Input should be greater than 0 (got -1)",
        "spec.yaml:12:3: stages.evalute: no stage kind 'evalute'; did you mean 'evaluate' or",
        "spec.yaml:14:15: stages.export.formats[0].name: unknown exporter 'onx'",
    ),
    bad_files(
        "two_specs_one_bad",
        {
            "good.yaml": "stages:\n  load_data:\n    dataset: mnist_sample\n",
            "bad.yaml": "stages:\n  load_data:\n    dataset: mnist_sample\n    shuffle: true\n",
        },
        "bad.yaml:4:5: stages.load_data.shuffle: unknown key 'shuffle'",
        args=["good.yaml", "bad.yaml"],
    ),
    bad_files(
        "duplicate_pipeline_names",
        {
            "a.yaml": "name: same\nstages:\n  load_data:\n    dataset: mnist_sample\n",
            "b.yaml": "name: same\nstages:\n  load_data:\n    dataset: sklearn_digits\n",
        },
        "b.yaml:1:7: name: pipeline name 'same' is also used by a.yaml; names must be unique",
    ),
    bad_files(
        "cross_pipeline_unknown_stage",
        {
            "base.yaml": HEAD + "  train: {}\n",
            "tune.yaml": HEAD + "    weights: {pipeline: base, stage: trian}\n",
        },
        "tune.yaml:6:38: stages.build_model.weights.stage: pipeline 'base' has no stage "
        "'trian'; did you mean 'train'? its stages: load_data, build_model, train",
    ),
]


def _params() -> list:
    ids = [c.id for c in CASES]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:  # pytest would quietly number them apart; a collection error says which
        raise ValueError(f"case ids used more than once: {', '.join(twice)}")
    return [pytest.param(c, id=c.id) for c in CASES]


def _issue_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ISSUE_LINE.match(line)]


@pytest.mark.parametrize("case", _params())
def test_bad_spec(case: Case, tmp_path: Path) -> None:
    for name, content in case.files.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    args = case.args or sorted(n for n in case.files if n.endswith(".yaml"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = kiln("validate", *args, cwd=tmp_path)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # the CPU time kiln used (a loaded machine stretches wall time, not this)
    elapsed = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 2, output

    lines = _issue_lines(result.stderr)
    for expected in case.expect:
        match = ISSUE_LINE.match(expected)
        assert match, f"bad expectation {expected!r}"
        where, fragment = match["where"], match["rest"]
        at = [line for line in lines if line.startswith(f"{where}: ")]
        assert at, f"no issue at {where}; got:\n{result.stderr}"
        assert any(fragment in line for line in at), (
            f"no issue at {where} says {fragment!r}; got:\n" + "\n".join(at)
        )
    assert len(lines) == len(case.expect), f"expected {len(case.expect)} issue(s), got:\n{output}"

    invalid = {e.split(":", 1)[0] for e in case.expect}
    assert f"{len(invalid)} of {len(args)} spec(s) invalid" in result.stderr
    assert result.stdout.splitlines() == [f"ok {n}" for n in args if n not in invalid]

    if case.id == "alias_bomb":
        assert elapsed < 5, f"the alias bomb took {elapsed:.1f} s of CPU to refuse"
    if case.id == "python_tag":
        assert not (tmp_path / "pwned.txt").exists(), "a Python tag was constructed"


@pytest.mark.parametrize(
    ("folder", "target", "message"),
    [
        (False, "missing.yaml", "missing.yaml:1:1: no such file"),
        (True, "folder.yaml", "folder.yaml:1:1: is a directory; give a .yaml spec file"),
    ],
)
def test_unreadable_spec(folder: bool, target: str, message: str, tmp_path: Path) -> None:
    if folder:
        (tmp_path / target).mkdir()
    result = kiln("validate", target, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr.splitlines()
    assert "Traceback" not in result.stderr


def test_no_specs_found(tmp_path: Path) -> None:
    result = kiln("validate", cwd=tmp_path)
    assert result.returncode == 2
    assert "error: no specs given and none found in pipelines/*.yaml" in result.stderr
    assert "Traceback" not in result.stderr
