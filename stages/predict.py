"""`kp-predict` / `python -m stages.predict MODEL INPUT...`: top-k classes (or a regression model's value) from an exported model.

A plain argparse CLI (not a DVC stage): MODEL is exports/saved_model or exports/tflite/<variant>.tflite;
each INPUT is a PNG/JPEG image, a .npy array, a CSV file or a folder of them (walked recursively).
With --labels-from-folders each INPUT is a folder of class sub-folders, and it prints the model's
accuracy, per-class recall and confusion table on them instead.
"""

import argparse
import json
from pathlib import Path

from pipeline.errors import UserError
from pipeline.export.predict import format_results, format_score, run_predict, run_score
from stages._config import report_user_error, setup_logging


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kp-predict", description="Predict with an exported model (SavedModel or .tflite)."
    )
    parser.add_argument("model", type=Path, help="exports/saved_model or a .tflite file")
    parser.add_argument(
        "inputs",
        type=Path,
        nargs="+",
        help="PNG/JPEG images, .npy arrays, CSV files, or folders of them (walked recursively)",
    )
    parser.add_argument(
        "-k",
        "--top-k",
        type=int,
        default=3,
        help="classes to show per example (default 3; a regression model prints its value)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON instead of text (one object of scores with --labels-from-folders)",
    )
    parser.add_argument(
        "--labels-from-folders",
        action="store_true",
        help="each INPUT is a folder of sub-folders named after the model's classes: print accuracy, "
        "per-class recall and the confusion table on them",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar over a folder")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging()
    try:
        if args.top_k < 1:
            raise UserError(f"predict: --top-k {args.top_k} is invalid: pass an integer >= 1")
        if args.labels_from_folders:
            output = run_score(args.model, args.inputs, progress=not args.no_progress)
            text = format_score(output)
        else:
            output = run_predict(args.model, args.inputs, args.top_k, progress=not args.no_progress)
            text = format_results(output)
    except UserError as error:
        report_user_error(error)
    print(json.dumps(output, indent=2) if args.json else text)


if __name__ == "__main__":
    main()
