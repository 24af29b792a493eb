"""pipeline.progress: a tqdm bar on a terminal; in a log, at most one line per 10% plus a summary."""

from __future__ import annotations

import io
import re

from pipeline.progress import SHOW_AFTER, Progress, track


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(total: int, seconds: float, steps: int, stream=None) -> list[str]:
    """``total`` items in ``steps`` equal updates spread over ``seconds``; the lines written."""
    stream = stream if stream is not None else io.StringIO()
    clock = Clock()
    with Progress(total, "preprocess: writing the train split", "example", stream, clock) as bar:
        for _ in range(steps):
            clock.now += seconds / steps
            bar.update(total // steps)
    return stream.getvalue().splitlines()


def test_a_log_gets_at_most_one_line_per_ten_percent_and_a_summary():
    lines = run(total=100_000, seconds=50, steps=1000)
    assert len(lines) == 10, lines  # 10% .. 90%, then the summary
    assert [int(re.search(r": (\d+)% ", line).group(1)) for line in lines[:-1]] == list(
        range(10, 100, 10)
    )
    assert lines[0] == (
        "preprocess: writing the train split: 10% (10,000/100,000 examples, 2,000/s, 45 s left)"
    )
    assert lines[-1] == "preprocess: writing the train split: 100,000 examples in 50 s (2,000/s)"


def test_short_work_prints_nothing_and_coarse_updates_skip_deciles():
    assert run(total=1000, seconds=SHOW_AFTER / 2, steps=10) == []
    coarse = run(total=1000, seconds=100, steps=2)  # two chunks: 50% and 100%
    assert [line.split(": ")[-1].split(" (")[0] for line in coarse] == [
        "50%",
        "1,000 examples in 1:40",
    ]


def test_a_terminal_gets_a_tqdm_bar_with_rate_and_time_left():
    stream = Terminal()
    clock = Clock()
    with Progress(1000, "ingest: decoding images", "image", stream, clock) as bar:
        for _ in range(4):
            bar.update(250)
    # tqdm only draws after SHOW_AFTER real seconds; force a refresh of a fresh bar to see its format
    stream = Terminal()
    bar = Progress(1000, "ingest: decoding images", "image", stream)
    bar.update(500)
    bar._bar.refresh()
    bar.close()
    text = stream.getvalue()
    assert "ingest: decoding images" in text and "500/1.00k" in text and "image/s" in text
    assert "<" in text  # elapsed<remaining


def test_track_counts_an_iterable_and_unknown_totals_get_only_the_summary():
    stream = io.StringIO()
    clock = Clock()
    with Progress(None, "evaluate: predicting", "example", stream, clock) as bar:
        for _ in range(5):
            clock.now += 1
            bar.update(100)
    assert stream.getvalue().splitlines() == ["evaluate: predicting: 500 examples in 5 s (100/s)"]
    assert list(track(range(3), "noop")) == [0, 1, 2]


def test_image_ingest_and_shard_writing_report_progress_in_a_log(tmp_path, monkeypatch, capsys):
    """The stages' long loops go through Progress: with SHOW_AFTER at 0 every one shows in stderr."""
    import numpy as np
    from PIL import Image

    from helpers.config import compose, tmp_paths
    from pipeline.data.ingest import run_ingest
    from pipeline.data.preprocess import run_preprocess

    monkeypatch.setattr("pipeline.progress.SHOW_AFTER", 0.0)
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for index in range(40):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(
                tmp_path / "images" / label / f"{index}.png"
            )
    config = compose(
        "data=image_folder", f"data.path={tmp_path}/images", "data.channels=1", *tmp_paths(tmp_path)
    )
    run_ingest(config.data, tmp_path / "raw")
    run_preprocess(config.preprocess, config.seed, tmp_path / "raw", tmp_path / "processed")
    lines = capsys.readouterr().err.splitlines()
    decoding = [line for line in lines if line.startswith("ingest: decoding images")]
    assert 1 < len(decoding) <= 10 and decoding[-1].startswith("ingest: decoding images: 80 images")
    for split in ("train", "val", "test"):
        assert any(line.startswith(f"preprocess: writing the {split} split: ") for line in lines)
