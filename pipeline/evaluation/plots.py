"""The evaluate stage's pictures: the confusion matrix, the predicted-vs-actual scatter and the training curves.

Each ``*_figure`` function returns a ``matplotlib.figure.Figure`` (tests read its axes) and
:func:`save_figure` writes it as a PNG. Figures are built without ``pyplot`` (no global state, no
figure to close; PNGs render with Agg) and matplotlib is imported inside the functions, so importing
this module stays cheap.

Confusion matrix: up to :data:`MAX_CELL_COUNTS` classes every cell shows its count; beyond, a
heatmap with a colour bar. The figure grows with the class count so every class keeps its own
tick label (CIFAR-100's 100 included; above :data:`MAX_LABELLED_CLASSES`, every k-th class).

Training curves (``reports/curves.png``): one panel per ``models/curves/<metric>.csv`` (train and
validation per epoch) and a learning-rate panel from ``models/learning_rate.csv``, for people who
do not use ``dvc plots``. A model directory without curves gets a figure that says so.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np

from pipeline.training.model_io import CURVES_DIR, LEARNING_RATE_FILE

logger = logging.getLogger(__name__)

MAX_CELL_COUNTS = 20  # classes up to which the confusion matrix prints its counts in the cells
MAX_LABELLED_CLASSES = (
    150  # above, tick labels every k-th class (a 1000-class matrix stays legible)
)
MAX_MATRIX_INCHES = 24.0  # the matrix's side at most (1000 classes would otherwise be 170 inches)
DPI = 100
METRIC_ORDER = ("loss", "accuracy")  # first panels; other metrics follow alphabetically
ABBREVIATIONS = {"mae": "MAE", "mse": "MSE", "rmse": "RMSE", "auc": "AUC"}


def save_figure(figure, path: Path, dpi: int = DPI) -> Path:
    """Write ``figure`` as a PNG at ``path``; returns ``path``."""
    figure.savefig(path, dpi=dpi, format="png")
    return Path(path)


def _confusion_sizes(num_classes: int) -> tuple[float, float, float]:
    """``(cell inches, tick font size, cell count font size)`` for ``num_classes`` classes."""
    if num_classes <= 10:
        return 0.65, 10.0, 10.0
    if num_classes <= MAX_CELL_COUNTS:
        return 0.5, 9.0, 8.0
    cell = min(max(0.2, 10.0 / num_classes), MAX_MATRIX_INCHES / num_classes)
    return cell, 8.0 if cell >= 0.2 else 6.0, 0.0


def _label_inches(names: list[str], font_size: float) -> float:
    """About how long the longest label runs, in inches (a character is ~0.5 em)."""
    return max((len(name) for name in names), default=1) * font_size * 0.5 / 72


def _write_counts(axes, image, matrix: np.ndarray, font_size: float) -> None:
    """Each cell's count, white on dark cells and black on light ones."""
    for (row, column), count in np.ndenumerate(matrix):
        red, green, blue, _ = image.cmap(image.norm(count))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        axes.text(
            column,
            row,
            str(count),
            ha="center",
            va="center",
            fontsize=font_size,
            color="white" if dark else "black",
        )


def confusion_figure(matrix: np.ndarray, class_names: list[str], title: str):
    """The confusion matrix (actual classes as rows, predicted as columns) as a figure.

    Example:
        >>> save_figure(confusion_figure(matrix, ["airplane", "automobile"], "cifar10"), "confusion.png")
    """
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    names = [str(name) for name in class_names]
    count = len(names)
    cell, tick_font, count_font = _confusion_sizes(count)
    rotation = 45 if count <= MAX_CELL_COUNTS else 90
    label = _label_inches(names, tick_font)
    side = max(cell * count, 2.5)
    colour_bar = 0.0 if count <= MAX_CELL_COUNTS else 1.6
    figure = Figure(
        figsize=(
            side + label + colour_bar + 0.9,
            side + label * math.sin(math.radians(rotation)) + 1.2,
        ),
        layout="constrained",
    )
    axes = figure.add_subplot()
    # A heatmap's few confusions next to a full diagonal vanish on a linear scale: square root.
    norm = PowerNorm(0.5, vmin=0) if count > MAX_CELL_COUNTS else None
    image = axes.imshow(matrix, cmap="Blues", norm=norm, interpolation="nearest")
    step = math.ceil(count / MAX_LABELLED_CLASSES)
    ticks = list(range(0, count, step))
    labels = [names[tick] for tick in ticks]
    # At 45 degrees each label ends under its own column; 90 degrees packs 100 classes side by side.
    alignment = {"ha": "right", "rotation_mode": "anchor"} if rotation == 45 else {}
    axes.set_xticks(ticks, labels, fontsize=tick_font, rotation=rotation, **alignment)
    axes.set_yticks(ticks, labels, fontsize=tick_font)
    heading = 12 if count <= MAX_CELL_COUNTS else 16
    axes.set_xlabel("predicted", fontsize=heading - 2)
    axes.set_ylabel("actual", fontsize=heading - 2)
    axes.set_title(title, fontsize=heading)
    if count_font:
        _write_counts(axes, image, matrix, count_font)
    else:
        figure.colorbar(image, ax=axes, shrink=0.6, label="test examples (square-root scale)")
    return figure


def predicted_vs_actual_figure(y_true: np.ndarray, predicted: np.ndarray, title: str):
    """A scatter of predicted against actual values with the ``predicted = actual`` diagonal."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 5), layout="constrained")
    axes = figure.add_subplot()
    axes.scatter(y_true, predicted, s=8, alpha=0.6)
    low = float(min(np.min(y_true), np.min(predicted)))
    high = float(max(np.max(y_true), np.max(predicted)))
    axes.plot([low, high], [low, high], color="black", linewidth=1)
    axes.set_xlabel("actual")
    axes.set_ylabel("predicted")
    axes.set_title(title)
    return figure


def _number(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _read_columns(path: Path, columns: tuple[str, ...]) -> dict[str, list[float]] | None:
    """The named columns of a CSV as floats (blank cells NaN), or ``None`` (logged) when one is missing."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in columns if name not in (reader.fieldnames or [])]
        if missing:
            logger.warning("curves.png: %s has no %s column; skipped", path, ", ".join(missing))
            return None
        rows = list(reader)
    return {name: [_number(row[name]) for row in rows] for name in columns}


def read_training_curves(models_dir: Path) -> tuple[dict[str, dict], dict | None]:
    """The train stage's curves: ``({metric: {"epoch", "train", "validation"}}, {"epoch", "learning_rate"} or None)``.

    Metrics come in :data:`METRIC_ORDER`, then alphabetically; missing files give ``{}`` and ``None``.
    """
    directory = Path(models_dir) / CURVES_DIR
    paths = sorted(directory.glob("*.csv")) if directory.is_dir() else []
    order = {name: index for index, name in enumerate(METRIC_ORDER)}
    paths.sort(key=lambda path: (order.get(path.stem, len(order)), path.stem))
    curves = {}
    for path in paths:
        columns = _read_columns(path, ("epoch", "train", "validation"))
        if columns is not None:
            curves[path.stem] = columns
    rate_path = Path(models_dir) / LEARNING_RATE_FILE
    rate = _read_columns(rate_path, ("epoch", "learning_rate")) if rate_path.is_file() else None
    return curves, rate


def _metric_label(metric: str) -> str:
    return ABBREVIATIONS.get(metric, metric.replace("_", " "))


def _line_style(epochs: list[float]) -> dict:
    """Markers while there are few epochs (a one-epoch run is a point, not an invisible line)."""
    return {"marker": "o", "markersize": 3} if len(epochs) <= 30 else {}


def _draw_curve(axes, metric: str, columns: dict) -> None:
    style = _line_style(columns["epoch"])
    axes.plot(columns["epoch"], columns["train"], label="train", **style)
    axes.plot(columns["epoch"], columns["validation"], label="validation", **style)
    axes.set_title(_metric_label(metric))
    axes.set_ylabel(_metric_label(metric))
    axes.legend()


def _draw_learning_rate(axes, rate: dict) -> None:
    values = [value for value in rate["learning_rate"] if value > 0]
    axes.plot(
        rate["epoch"],
        rate["learning_rate"],
        color="tab:green",
        label="learning rate",
        **_line_style(rate["epoch"]),
    )
    if values and max(values) / min(values) > 10:
        axes.set_yscale("log")
    axes.set_title("learning rate")
    axes.set_ylabel("learning rate")
    axes.legend()


def curves_figure(curves: dict[str, dict], learning_rate: dict | None, title: str):
    """One panel per metric (train and validation per epoch) and a learning-rate panel.

    With no curves at all, one panel that says none were recorded and how to get them.

    Example:
        >>> save_figure(curves_figure(*read_training_curves("models"), "digits"), "curves.png")
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = len(curves) + (learning_rate is not None)
    if not curves:
        figure = Figure(figsize=(7, 3), layout="constrained")
        axes = figure.add_subplot()
        axes.set_axis_off()
        axes.text(
            0.5,
            0.5,
            "No training curves were recorded with this model\n"
            f"({CURVES_DIR}/<metric>.csv is missing): rerun the train stage\n"
            "(dvc repro train) to record them.",
            ha="center",
            va="center",
            fontsize=11,
            transform=axes.transAxes,
        )
        figure.suptitle(title)
        return figure
    columns = min(panels, 3)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(4.6 * columns, 3.4 * rows + 0.5), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes, (metric, values) in zip(grid, curves.items(), strict=False):
        _draw_curve(axes, metric, values)
    if learning_rate is not None:
        _draw_learning_rate(grid[len(curves)], learning_rate)
    for axes in grid[:panels]:
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    for axes in grid[panels:]:
        axes.remove()
    figure.suptitle(title, fontsize=13)
    return figure


def write_curves_png(models_dir: Path, path: Path, title: str) -> Path:
    """Draw the train stage's curves from ``models_dir`` into ``path`` (always written; see :func:`curves_figure`)."""
    curves, learning_rate = read_training_curves(models_dir)
    if not curves:
        logger.info(
            "No training curves in %s (%s/*.csv): %s says none were recorded",
            models_dir,
            CURVES_DIR,
            Path(path).name,
        )
    return save_figure(curves_figure(curves, learning_rate, title), path)
