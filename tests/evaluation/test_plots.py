"""The evaluate stage's pictures: confusion matrices at 10, 20 and 100 classes, training curves."""

from __future__ import annotations

import csv
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline.evaluation import plots
from pipeline.evaluation.plots import (
    confusion_figure,
    curves_figure,
    read_training_curves,
    save_figure,
    write_curves_png,
)

CIFAR10 = "airplane automobile bird cat deer dog frog horse ship truck".split()
CIFAR100 = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab "
    "crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard "
    "lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom "
    "oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine "
    "possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake "
    "spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor "
    "train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
CLASS_NAMES = {10: CIFAR10, 20: CIFAR100[:20], 100: CIFAR100}


def png_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the PNG header."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def confusion(num_classes: int) -> np.ndarray:
    """A mostly-right matrix with a few confusions (counts up to 1000, as CIFAR-10's test split)."""
    rng = np.random.default_rng(num_classes)
    return np.diag(np.full(num_classes, 700)) + rng.integers(0, 30, (num_classes, num_classes))


def cell_texts(axes) -> list[str]:
    return [text.get_text() for text in axes.texts]


def label_room(figure, axes, axis: str) -> float:
    """The room each tick label has across its own line between its neighbours, in font heights.

    Neighbouring labels are parallel lines one tick apart: their distance across the text is the
    tick spacing times the sine (x axis) or cosine (y axis) of the rotation. Below 1 they overlap,
    which is what ``airplaneautomobile`` was.
    """
    labels = getattr(axes, f"get_{axis}ticklabels")()
    ticks = getattr(axes, f"get_{axis}ticks")()
    start, end = axes.transData.transform([(ticks[0], ticks[0]), (ticks[1], ticks[1])])
    spacing = abs(end - start)[0 if axis == "x" else 1]
    angle = math.radians(labels[0].get_rotation())
    across = spacing * abs(math.sin(angle) if axis == "x" else math.cos(angle))
    return across / max(label.get_fontsize() * figure.dpi / 72 for label in labels)


def inside(figure, artists) -> bool:
    """Whether every artist is drawn within the figure (no label cut off at the edge)."""
    box = figure.bbox
    return all(
        box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1 and box.y0 - 1 <= extent.y0
        for extent in (artist.get_window_extent() for artist in artists)
    )


@pytest.fixture(scope="module", params=[10, 20, 100])
def confusion_picture(request, tmp_path_factory):
    """``(classes, figure, png path)`` for 10, 20 and 100 CIFAR class names."""
    count = request.param
    figure = confusion_figure(
        confusion(count), CLASS_NAMES[count], f"cifar: accuracy 0.7 ({count})"
    )
    path = save_figure(figure, tmp_path_factory.mktemp("plots") / f"confusion_{count}.png")
    return count, figure, path


def test_confusion_names_every_class_legibly(confusion_picture):
    count, figure, _ = confusion_picture
    axes = figure.axes[0]
    assert axes.get_title() == f"cifar: accuracy 0.7 ({count})"
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("predicted", "actual")
    assert [label.get_text() for label in axes.get_xticklabels()] == CLASS_NAMES[count]
    assert [label.get_text() for label in axes.get_yticklabels()] == CLASS_NAMES[count]
    assert min(label.get_fontsize() for label in axes.get_xticklabels()) >= 7, "still legible"
    assert label_room(figure, axes, "x") >= 1.2 and label_room(figure, axes, "y") >= 1.2
    assert inside(figure, [*axes.get_xticklabels(), *axes.get_yticklabels(), axes.title])


def test_counts_up_to_20_classes_a_heatmap_beyond(confusion_picture):
    count, figure, _ = confusion_picture
    texts = figure.axes[0].texts
    if count <= 20:
        assert [text.get_text() for text in texts] == [str(n) for n in confusion(count).ravel()]
        expected = ["white" if value >= 700 else "black" for value in confusion(count).ravel()]
        assert [text.get_color() for text in texts] == expected, "readable on dark cells"
        assert len(figure.axes) == 1, "no colour bar: the counts say it"
    else:
        assert len(texts) == 0 and len(figure.axes) == 2
        assert "test examples" in figure.axes[1].get_ylabel()


PNG_SIZES = {10: (600, 1100), 20: (1100, 1500), 100: (2000, 3000)}  # pixels, either side


def test_confusion_png_grows_with_the_classes(confusion_picture):
    count, _, path = confusion_picture
    low, high = PNG_SIZES[count]
    assert all(low <= side <= high for side in png_size(path)), png_size(path)


def test_a_thousand_classes_label_every_kth_and_stay_bounded(tmp_path):
    names = [f"class_{index}" for index in range(1000)]
    figure = confusion_figure(np.eye(1000, dtype=np.int64), names, "imagenet")
    labels = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    assert labels[:2] == ["class_0", "class_7"] and len(labels) <= plots.MAX_LABELLED_CLASSES
    assert max(figure.get_size_inches()) < 32


def write_csv(path: Path, header: list[str], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_curves(models: Path, metrics: tuple[str, ...], epochs: int = 5) -> Path:
    """The train stage's curve files: ``curves/<metric>.csv`` and ``learning_rate.csv``."""
    for metric in metrics:
        write_csv(
            models / "curves" / f"{metric}.csv",
            ["epoch", "train", "validation"],
            [(epoch, 1 / epoch, 1.1 / epoch) for epoch in range(1, epochs + 1)],
        )
    write_csv(
        models / "learning_rate.csv",
        ["epoch", "learning_rate"],
        [(epoch, 0.001) for epoch in range(1, epochs + 1)],
    )
    return models


def panels(figure) -> dict[str, list[str]]:
    """``{panel title: legend labels}``."""
    return {
        axes.get_title(): [text.get_text() for text in axes.get_legend().get_texts()]
        for axes in figure.axes
    }


def test_classification_curves_panel_per_metric_and_learning_rate(tmp_path):
    models = write_curves(tmp_path / "models", ("accuracy", "loss"))
    figure = curves_figure(*read_training_curves(models), "digits: training curves")
    assert panels(figure) == {
        "loss": ["train", "validation"],
        "accuracy": ["train", "validation"],
        "learning rate": ["learning rate"],
    }
    assert {axes.get_xlabel() for axes in figure.axes} == {"epoch"}
    assert figure.get_suptitle() == "digits: training curves"
    loss = figure.axes[0].get_lines()
    assert list(loss[1].get_ydata()) == pytest.approx([1.1 / epoch for epoch in range(1, 6)])
    path = write_curves_png(models, tmp_path / "curves.png", "digits: training curves")
    width, height = png_size(path)
    assert 1000 <= width <= 1600 and 250 <= height <= 600, (width, height)


def test_regression_curves_plot_its_own_metrics(tmp_path):
    models = write_curves(tmp_path / "models", ("loss", "mae", "rmse"))
    figure = curves_figure(*read_training_curves(models), "housing: training curves")
    assert list(panels(figure)) == ["loss", "MAE", "RMSE", "learning rate"]
    assert [axes.get_ylabel() for axes in figure.axes] == ["loss", "MAE", "RMSE", "learning rate"]


def test_missing_curves_still_write_a_picture_that_says_so(tmp_path, caplog):
    caplog.set_level("INFO", logger=plots.__name__)
    path = write_curves_png(tmp_path / "old-models", tmp_path / "curves.png", "digits: curves")
    assert png_size(path)[0] > 0 and "No training curves" in caplog.text
    figure = curves_figure({}, None, "digits: curves")
    assert "No training curves were recorded" in figure.axes[0].texts[0].get_text()


def test_a_curve_file_without_its_columns_is_skipped(tmp_path, caplog):
    models = write_curves(tmp_path / "models", ("loss",))
    write_csv(models / "curves" / "broken.csv", ["epoch", "value"], [(1, 0.5)])
    curves, learning_rate = read_training_curves(models)
    assert list(curves) == ["loss"] and learning_rate["learning_rate"] == [0.001] * 5
    assert "broken.csv has no train, validation column" in caplog.text
