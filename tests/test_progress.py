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
