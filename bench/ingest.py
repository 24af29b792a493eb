"""Throughput and peak memory of ``ingest`` (and ``preprocess``) on a generated image folder.

What is measured:

* **generate** (not part of the result): ``--count`` small PNGs (``--size`` pixels square, RGB, a
  class-dependent brightness plus noise) in ``--classes`` class sub-folders of a temporary
  directory.
* **ingest**: :func:`pipeline.data.ingest.run_ingest` with ``data=image_folder`` (``data.image_size``
  = the PNG size, ``data.channels=3``) in a fresh spawned process, so its peak RSS
  (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is ingest's own and not the generator's.
  images/s = images written / wall seconds of the ``run_ingest`` call (listing, decoding,
  writing ``x.npy``, checksums, schema).
* **preprocess**: :func:`pipeline.data.preprocess.run_preprocess` on ingest's output, likewise in a
  fresh process (skipped with a note if it fails on this output).

* **preprocess against a baseline** (``--baseline-repo DIR``, e.g. a ``git worktree`` of an older
  commit): the same ingested output is preprocessed ``--rounds`` times by each checkout's
  ``run_preprocess``, alternating, each in a fresh process; the medians and their ratio are
  printed, so a change to preprocess is measured side by side on one machine in one run.

The baseline RSS of such a process (Python + numpy + Pillow + the pipeline imports, before any
work) is printed too. Target: peak RSS < 1.5 GB at 100,000 images. Everything goes to a temporary
directory deleted at the end. Run from the repository root::

    python bench/ingest.py                 # 100,000 images (about 20 minutes on 2 cores)
    python bench/ingest.py --count 20000
    git worktree add /tmp/base HEAD~3 && python bench/ingest.py --count 20000 --baseline-repo /tmp/base
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def generate(root: Path, count: int, classes: int, size: int, seed: int = 0) -> None:
    """``count`` PNGs spread evenly over ``classes`` sub-folders, one in memory at a time."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index in range(count):
        label = index % classes
        folder = root / f"class_{label:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 64, (size, size, 3), dtype=np.uint8) + np.uint8(label * 19)
        Image.fromarray(pixels, "RGB").save(folder / f"{index:06d}.png", compress_level=1)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


REPO = Path(__file__).resolve().parents[1]


def _ingest(root: str, raw: str, size: int, results) -> None:
    import sys

    sys.path.insert(0, str(REPO))
    from pipeline.data.ingest import run_ingest
    from stages._config import compose_conf, to_settings

    settings = to_settings(
        compose_conf(
            [
                "data=image_folder",
                f"data.path={root}",
                f"data.image_size=[{size},{size}]",
                "data.channels=3",
            ]
        )
    ).data
    baseline = _peak_rss_mb()
    start = time.perf_counter()
    manifest = run_ingest(settings, Path(raw))
    results.put(
        {
            "seconds": time.perf_counter() - start,
            "images": manifest["num_examples"],
            "baseline_mb": baseline,
            "peak_mb": _peak_rss_mb(),
            "x_mb": (Path(raw) / "x.npy").stat().st_size / 2**20,
        }
    )


def _preprocess(raw: str, processed: str, repo: str, results) -> None:
    import sys

    sys.path.insert(0, repo)  # this checkout's pipeline, or the baseline's
    from pipeline.data.preprocess import run_preprocess
    from stages._config import compose_conf, to_settings

    config = to_settings(compose_conf([]))
    baseline = _peak_rss_mb()
    start = time.perf_counter()
    try:
        run_preprocess(config.preprocess, config.seed, Path(raw), Path(processed))
    except (
        Exception
    ) as error:  # report, do not crash the benchmark: preprocess is measured when it can run
        results.put({"error": f"{type(error).__name__}: {error}"})
        return
    results.put(
        {"seconds": time.perf_counter() - start, "baseline_mb": baseline, "peak_mb": _peak_rss_mb()}
    )


def measure(target, *args) -> dict:
    """Run ``target(*args, queue)`` in a fresh spawned process and return what it reported."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=target, args=(*args, results))
    process.start()
    result = results.get()
    process.join()
    return result


def compare_preprocess(work: Path, images: int, baseline: Path, rounds: int) -> None:
    """Preprocess the same ingested output with this checkout and ``baseline``, alternating; print medians and the ratio."""
    runs: dict[str, list[dict]] = {"this": [], "baseline": []}
    for _ in range(rounds):
        for side, repo in (("baseline", baseline), ("this", REPO)):
            out = work / f"processed-{side}"
            result = measure(_preprocess, str(work / "raw"), str(out), str(repo))
            shutil.rmtree(out, ignore_errors=True)
            if "error" in result:
                raise SystemExit(f"preprocess ({side}, {repo}) failed: {result['error']}")
            runs[side].append(result)
    medians = {
        side: float(np.median([run["seconds"] for run in results]))
        for side, results in runs.items()
    }
    for side, repo in (("baseline", baseline), ("this", REPO)):
        peak = max(run["peak_mb"] for run in runs[side])
        print(
            f"preprocess ({side}: {repo}): median of {rounds} {medians[side]:.1f} s = {images / medians[side]:,.0f} images/s; "
            f"peak RSS {peak:,.0f} MB"
        )
    print(f"throughput this / baseline: {medians['baseline'] / medians['this']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="number of PNGs to generate")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=32, help="PNG width and height in pixels")
    parser.add_argument("--skip-preprocess", action="store_true")
    parser.add_argument(
        "--baseline-repo",
        type=Path,
        help="another checkout whose preprocess is measured on the same data",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="preprocess runs per checkout with --baseline-repo"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        start = time.perf_counter()
        generate(work / "images", args.count, args.classes, args.size)
        print(
            f"generated {args.count} PNGs ({args.size}x{args.size} RGB, {args.classes} classes) in "
            f"{time.perf_counter() - start:.1f} s"
        )
        ingest = measure(_ingest, str(work / "images"), str(work / "raw"), args.size)
        print(
            f"ingest:     {ingest['images']} images in {ingest['seconds']:.1f} s = {ingest['images'] / ingest['seconds']:,.0f} images/s; "
            f"peak RSS {ingest['peak_mb']:,.0f} MB (process baseline {ingest['baseline_mb']:,.0f} MB); x.npy {ingest['x_mb']:,.0f} MB"
        )
        if args.baseline_repo:
            compare_preprocess(work, ingest["images"], args.baseline_repo.resolve(), args.rounds)
        elif not args.skip_preprocess:
            pre = measure(_preprocess, str(work / "raw"), str(work / "processed"), str(REPO))
            if "error" in pre:
                print(f"preprocess: failed on this output: {pre['error']}")
            else:
                print(
                    f"preprocess: {ingest['images']} images in {pre['seconds']:.1f} s = {ingest['images'] / pre['seconds']:,.0f} images/s; "
                    f"peak RSS {pre['peak_mb']:,.0f} MB (process baseline {pre['baseline_mb']:,.0f} MB)"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
