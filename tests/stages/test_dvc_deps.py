"""dvc.yaml lists exactly the code each stage runs (tools/dvc_deps.py), and the checker finds every kind of import."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from helpers.config import REPO
from tools.dvc_deps import check_stages, main

FIX = "`python tools/dvc_deps.py` prints every stage's computed closure"


@pytest.fixture(scope="module")
def repo_checks():
    return {check.name: check for check in check_stages(REPO)}


def by_stage(files: dict[str, tuple[str, ...]]) -> str:
    return "; ".join(f"{stage}: {', '.join(names)}" for stage, names in files.items())


def test_every_stage_lists_every_module_its_command_imports(repo_checks):
    missing = {name: check.missing for name, check in repo_checks.items() if check.missing}
    assert not missing, (
        f"a change to these modules would not rerun the stages that import them: add them to the "
        f"stages' deps in dvc.yaml ({FIX}): {by_stage(missing)}"
    )


def test_no_stage_lists_python_files_it_never_imports(repo_checks):
    extra = {name: check.extra for name, check in repo_checks.items() if check.extra}
    assert not extra, (
        f"a change to these files would rerun stages for nothing: drop them from the stages' deps in "
        f"dvc.yaml ({FIX}): {by_stage(extra)}"
    )


def test_the_changes_that_used_to_rerun_nothing_rerun_their_stages(repo_checks):
    def listed(stage: str, file: str) -> bool:
        return file in repo_checks[stage].closure and file not in repo_checks[stage].missing

    assert listed("evaluate", "pipeline/data/shards.py") and listed(
        "export", "pipeline/data/shards.py"
    )  # load_split
    assert listed("gate", "stages/gate.py")
    assert all(listed(stage, "stages/_common.py") for stage in repo_checks)  # compose's timings too


def test_a_change_to_the_export_wing_reruns_only_export(repo_checks):
    """Wings are listed as folders; one a stage never runs is not among its deps (the gate only compares numbers)."""
    from tools.dvc_deps import covers

    users = {
        name
        for name, check in repo_checks.items()
        if any(covers(dep, "pipeline/export/tflite.py") for dep in _code_deps(name))
    }
    assert users == {"export"}, users
    assert not any(
        file.startswith(("pipeline/export", "pipeline/training", "pipeline/data"))
        for file in repo_checks["gate"].closure
    )


def _code_deps(stage: str) -> list[str]:
    import yaml

    from tools.dvc_deps import code_deps

    return code_deps(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"])


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """``{relative path: text}`` written under ``root`` (text dedented); returns ``root``."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


FAKE_REPO = {
    "app/__init__.py": "",
    "app/main.py": """
        import json

        def run():
            from app import helpers  # function-local, and a submodule imported from its package
            return helpers
    """,
    "app/helpers/__init__.py": "from .core import thing  # relative\n",
    "app/helpers/core.py": """
        try:
            import numpy
        except ImportError:
            from .. import fallback  # relative, two levels, inside a try block
        thing = 1
    """,
    "app/fallback.py": "",
    "app/plugin.py": "",
    "app/unused.py": "",
    "tools/job.py": """
        import importlib
        import local_helper  # next to the script: Python puts its folder first on sys.path

        if True:
            importlib.import_module("app.plugin")
    """,
    "tools/local_helper.py": "",
}

FAKE_DVC_YAML = """
stages:
  main:
    cmd: python -m app.main --params params.yaml
    deps:
      - ${paths.raw}
      - app/main.py
      - app/unused.py
  job:
    cmd: python3 tools/job.py
    deps:
      - app/
      - tools
      - lib
"""


@pytest.fixture
def fake_checks(tmp_path):
    root = write_tree(tmp_path, {**FAKE_REPO, "lib/other.py": "", "dvc.yaml": FAKE_DVC_YAML})
    return {check.name: check for check in check_stages(root)}


def test_closure_follows_local_submodule_relative_and_package_init_imports(fake_checks):
    assert fake_checks["main"].closure == (
        "app/__init__.py",
        "app/fallback.py",
        "app/helpers/__init__.py",
        "app/helpers/core.py",
        "app/main.py",
    )


def test_a_script_entry_sees_its_own_folder_and_literal_import_module_calls(fake_checks):
    assert fake_checks["job"].closure == (
        "app/__init__.py",
        "app/plugin.py",
        "tools/job.py",
        "tools/local_helper.py",
    )


def test_uncovered_modules_and_unimported_python_deps_are_reported(fake_checks):
    main_stage, job = fake_checks["main"], fake_checks["job"]
    assert main_stage.missing == (
        "app/__init__.py",
        "app/fallback.py",
        "app/helpers/__init__.py",
        "app/helpers/core.py",
    )
    assert main_stage.extra == ("app/unused.py",)
    assert (
        job.missing == ()
    )  # folders (with or without a trailing slash) cover every module below them
    # A folder dep (a wing) is fine when the stage runs any module in it; one holding only code it never runs is needless.
    assert job.extra == ("lib",)


def test_cli_prints_closures_and_fails_naming_the_fix(fake_checks, tmp_path, capsys):
    assert main(["--root", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "main: python -m app.main --params params.yaml\n  - app/__init__.py\n" in out
    assert (
        "stage 'main' runs app/__init__.py, app/fallback.py, app/helpers/__init__.py, app/helpers/core.py but "
        "dvc.yaml does not list them: add them to stages.main.deps"
    ) in err
    assert (
        "stage 'main' lists app/unused.py but never imports them: drop them from stages.main.deps"
        in err
    )


def test_users_model_code_is_a_dep_of_the_stages_that_load_it():
    """user_models/ is imported by dotted path at run time (model.builder), which ast cannot see."""
    users = {
        name
        for name in ("compose", "ingest", "preprocess", "train", "evaluate", "gate", "export")
        if "user_models" in _code_deps(name)
    }
    assert users == {"train", "evaluate", "export"}
