"""What every source returns, and the bad-record policy they all share.

A *bad record* is one example that cannot be used (an unreadable image, a NaN, a label outside the
set...). ``data.on_bad_record=fail`` stops at the first with one line naming it; ``skip`` drops it
and lists it (path or row) in ``manifest.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import UserError

logger = logging.getLogger(__name__)

SOURCE_SPLIT_FILE = (
    "split.npy"  # ingest's optional raw file: 1 per example of the source's own test split
)
MAX_LISTED = 1000  # bad records named in the manifest; the count is always exact


@dataclass
class RawData:
    """Examples of one source.

    ``x`` may be a read-only memmap of the ``x.npy`` a streaming source already wrote
    (``written=True``); ``columns`` describes table features for the schema (name -> kind, vocabulary).
    """

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    source: str
    feature_names: list[str] | None = None
    columns: dict | None = None
    bad_records: list[dict] = field(default_factory=list)
    bad_record_count: int = 0
    value_range: tuple[float, float] | None = None
    notes: dict = field(
        default_factory=dict
    )  # source-specific facts for the manifest (e.g. missing values)
    written: bool = False
    is_test: np.ndarray | None = (
        None  # 1 per example of the source's own test split, 0 for its train pool
    )
    missing_allowed: bool = (
        False  # NaN marks a missing value that preprocess fills (csv with data.missing != drop)
    )
    task: str = (
        "classification"  # regression: ``y`` is a float32 target and ``class_names`` is empty
    )


class BadRecords:
    """Collects bad records under a policy: ``fail`` raises at the first, ``skip`` keeps a list.

    Example:
        >>> bad = BadRecords("skip", "image_folder")
        >>> bad.add("cat/3.png", "unreadable (truncated file)")
    """

    def __init__(self, policy: str, source: str):
        self.policy, self.source = policy, source
        self.records: list[dict] = []
        self.count = 0

    def add(self, record: str, reason: str, count: int = 1) -> None:
        if self.policy == "fail":
            raise UserError(
                f"data '{self.source}': {record}: {reason}: fix or remove it, or set data.on_bad_record=skip"
            )
        self.count += count
        if len(self.records) < MAX_LISTED:
            self.records.append({"record": record, "reason": reason})
        if self.count <= 10:
            logger.warning(
                "Skipping %s: %s%s",
                record,
                reason,
                " (further skips are only listed in the manifest)" if self.count == 10 else "",
            )

    def attach(self, data: RawData) -> RawData:
        """Add these records to ``data``'s (sources may report some, ingest's checks others)."""
        data.bad_records = (data.bad_records + self.records)[:MAX_LISTED]
        data.bad_record_count += self.count
        return data


def require_path(settings, what: str, folder: bool = False, also: str = "") -> Path:
    """``data.path`` as an existing file (or folder), else one line saying what to put there."""
    if not settings.path:
        raise UserError(f"data: data={settings.name} needs data.path=/path/to/{what}")
    path = Path(settings.path).expanduser()
    if not path.exists():
        raise UserError(f"data: data.path={settings.path} does not exist: place {what} there{also}")
    if folder and not path.is_dir():
        raise UserError(f"data: data.path={settings.path} is a file: point it at {what}")
    return path
