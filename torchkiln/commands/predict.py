"""`kiln predict SPEC ...`: run a pipeline's exported model on new inputs.

Uses only the export folder (`runs/<pipeline>/<export stage>/out`). Its model card says
what the model takes (`input.modality`), and that picks the pack's predictor
(`torchkiln.data.formats.register_predictor`):

- image: `kiln predict SPEC IMAGE... | DIR` classifies image files (any size: converted
  and resized as the dataset's settings say) with the top classes and probabilities;
- text: `kiln predict SPEC "some text" ...` classifies raw text, encoded with the exported
  `tokenizer.json` and `vocab.json` exactly as load_data did;
- series: `kiln predict SPEC --file series.csv` forecasts the next `horizon` values after
  the table's last timestamp.

`model.onnx` runs under onnxruntime (numpy only, no torch import) by default; `model.pt`
under TorchScript only with `--format torchscript`, since loading TorchScript runs the
code it holds (see `exported_file`). The spec is read for the pipeline's name and export stage
(validation only, no torch).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torchkiln.commands import AddCommand
from torchkiln.commands.exports import (
    add_export_arguments,
    export_folder,
    exported_file,
    read_card,
)
from torchkiln.errors import UsageError


def register(add: AddCommand) -> None:
    p = add(
        "predict",
        cmd_predict,
        "Run a pipeline's exported model (ONNX or TorchScript) on new inputs: classify image "
        "files or raw text, or forecast the series of a table (--file series.csv).",
    )
    p.add_argument("spec", metavar="SPEC", help="the pipeline spec, e.g. pipelines/mnist_cnn.yaml")
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="image files or folders of images (image models), or texts (text models); "
        "before, between or after the options",
    )
    p.set_defaults(intermixed="inputs")
    p.add_argument(
        "--file",
        metavar="FILE",
        help="text: classify every non-blank line of FILE ('-': standard input); "
        "forecast: the table (CSV or Parquet) whose series to continue",
    )
    add_export_arguments(p, "model")
    p.add_argument(
        "--top", type=int, default=1, metavar="K", help="classifiers: show the K likeliest labels"
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON object per input (per forecast step)"
    )


def cmd_predict(args: argparse.Namespace) -> int:
    from torchkiln.data.formats import PREDICTORS, predictor

    _, folder = export_folder(Path(args.spec), args.stage, "to predict with")
    card = read_card(folder)
    modality = str((card.get("input") or {}).get("modality"))
    run = predictor(modality)
    if run is None:
        raise UsageError(
            f"kiln predict runs exported models on {', '.join(sorted(PREDICTORS))} inputs; "
            f"this export is a {card.get('task', '?')} model on {modality} inputs"
        )
    fmt, path = exported_file(folder, args.format)
    return int(run(args, folder, card, fmt, path))
