"""`kp-predict` / `python -m stages.predict MODEL INPUT...`: top-k classes (or a regression model's value) from an exported model.

A plain argparse CLI (not a DVC stage): MODEL is exports/saved_model or exports/tflite/<variant>.tflite;
each INPUT is a PNG/JPEG image, a .npy array, a CSV file or a folder of them.
"""

import argparse
import json
from pathlib import Path

from pipeline.errors import UserError
from pipeline.export.predict import format_results, run_predict
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
        help="PNG/JPEG images, .npy arrays, CSV files, or folders of them",
    )
    parser.add_argument(
        "-k",
        "--top-k",
        type=int,
        default=3,
        help="classes to show per example (default 3; a regression model prints its value)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of one line per example"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar over a folder")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging()
    try:
        if args.top_k < 1:
            raise UserError(f"predict: --top-k {args.top_k} is invalid: pass an integer >= 1")
        results = run_predict(args.model, args.inputs, args.top_k, progress=not args.no_progress)
    except UserError as error:
        report_user_error(error)
    print(json.dumps(results, indent=2) if args.json else format_results(results))


if __name__ == "__main__":
    main()
