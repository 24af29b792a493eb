"""The repository's DVC settings (.dvc/config), read the way DVC reads them."""

from __future__ import annotations

from helpers.config import REPO


def test_hydra_mode_is_on_and_usage_analytics_are_off(monkeypatch):
    """Hydra mode: `dvc exp run -S` composes conf/. Analytics: each dvc command would otherwise
    start a reporting process (~0.7 CPU s), which offline leaves its report in the temp dir."""
    from dvc.analytics import is_enabled
    from dvc.config import Config

    monkeypatch.delenv("DVC_NO_ANALYTICS", raising=False)
    monkeypatch.delenv("DVC_TEST", raising=False)
    monkeypatch.chdir(REPO)
    config = Config.from_cwd(validate=True)
    assert config["hydra"]["enabled"] is True
    assert is_enabled() is False
