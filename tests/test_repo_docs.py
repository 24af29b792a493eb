"""The README's two commands, .ci/run and the users' CI recipe stay consistent."""

from __future__ import annotations

import os
import re
import subprocess

from conftest import REPO


def readme_command(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```\n(.+?)\n```", text, re.S)
    assert match, f"README has no {marker} block"
    return match.group(1).strip()


def test_quickstart_is_two_commands_sharing_one_install():
    run, test = readme_command("quickstart-run"), readme_command("quickstart-test")
    assert run.endswith("&& dvc repro") and test.endswith("&& python -m pytest")
    assert run.rsplit("&&", 1)[0] == test.rsplit("&&", 1)[0]
    assert "requirements.lock" in run and "npm ci --prefix tools/tfjs_runner" in run


def test_ci_runs_the_readme_test_command_verbatim():
    result = subprocess.run(["bash", str(REPO / ".ci" / "run")], env={**os.environ, "CI_RUN_PRINT_ONLY": "1"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"+ {readme_command('quickstart-test')}"


def test_users_ci_recipe_installs_like_the_readme_and_runs_the_smoke_preset():
    workflow = (REPO / ".github" / "workflows" / "pipeline.yml").read_text()
    install = readme_command("quickstart-run").rsplit("&&", 1)[0].strip()
    assert f"run: {install}" in workflow
    assert "experiment: smoke" in workflow and "dvc repro" in workflow and "dvc metrics show" in workflow
    assert (REPO / "conf" / "experiment" / "smoke.yaml").is_file()
    assert "- experiment: null" in (REPO / "conf" / "config.yaml").read_text()  # what the workflow's sed edits
