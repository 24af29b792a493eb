"""The gate's verdict on disk: ``reports/blessing.json``, written by the gate and required by export.

``{"blessed": bool, "reason": str, ...}``: export runs only when ``blessed`` is true.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import UserError
from pipeline.io import read_json

BLESSING_FILE = "blessing.json"


def require_blessing(blessing_path: Path) -> dict:
    """The blessing at ``blessing_path`` if it blesses the model.

    Raises:
        UserError: no blessing yet, or one that says no (with its reason).
    """
    if not blessing_path.is_file():
        raise UserError(
            f"export: no model blessing at {blessing_path}: run the gate stage first (dvc repro gate)"
        )
    blessing = read_json(blessing_path)
    if not blessing.get("blessed"):
        raise UserError(
            f"export: refusing an unblessed model ({blessing.get('reason', 'no reason recorded')}): "
            "fix the model or the gate.* thresholds and rerun the gate"
        )
    return blessing
