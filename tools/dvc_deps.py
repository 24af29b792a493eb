"""Which repository modules each DVC stage runs, and whether ``dvc.yaml`` lists them as deps.

DVC reruns a stage when one of its ``deps`` changes, so a stage must list every repository module
its command can execute, and (for precise reruns) no Python file it never executes. This module
computes each stage's *import closure* statically, with :mod:`ast` (the code is never imported):

* the entry point is the module the stage's ``cmd`` runs: ``python -m a.b`` (``a/b.py``, or
  ``a/b/__main__.py`` for a package) or ``python path/to/file.py``;
* every ``import a.b``, ``from a.b import c`` (``c`` may be a submodule: ``a/b/c.py`` or
  ``a/b/c/__init__.py``), relative import and ``importlib.import_module("a.b")`` with a literal
  argument is followed, wherever it appears: at module level or inside a function, method, ``if``
  or ``try`` block;
* importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` too, so they are included;
* only *repository* modules count: names that resolve to a ``.py`` file under the repository root
  (for a ``python path/to/file.py`` entry, also under that file's folder, which Python puts first
  on ``sys.path``). Standard library and third-party imports are ignored.

A dep *covers* a module when it is the module's path or a folder above it; deps with ``${...}``
interpolation are data paths (``${paths.raw}``) and never cover code. Not modelled: stages with
``wdir``, ``foreach``/``matrix`` stages, and code loaded without an import statement (Hydra's
plugin discovery scanning ``hydra_plugins/``).

``dvc.yaml`` lists the library's wings as folders (``pipeline/data``, ``pipeline/training``...) and
every other module file by file. Run ``python tools/dvc_deps.py`` to print every stage's deps that
way; it exits 1 when a stage misses a module or lists a Python file (or a wing) it never runs,
naming what to add to or drop from dvc.yaml.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PYTHON = re.compile(r"python[0-9.]*")  # python, python3, python3.11


@dataclass(frozen=True)
class Entry:
    """What a stage's command runs: a dotted module name, and the folders Python resolves imports against."""

    module: str
    search_path: tuple[Path, ...]


@dataclass(frozen=True)
class StageCheck:
    """One stage's computed closure against its ``dvc.yaml`` deps (paths relative to the repo, POSIX style)."""

    name: str
    cmd: str
    closure: tuple[str, ...]
    missing: tuple[str, ...]  # modules in the closure that no dep covers
    extra: tuple[
        str, ...
    ]  # Python files listed (directly or under a listed folder) outside the closure


def command_entry(cmd: str, root: Path) -> Entry | None:
    """The module ``cmd`` runs with Python (``-m a.b`` or ``path/to/file.py``), or None for another command."""
    words = shlex.split(cmd)
    for index, word in enumerate(words[:-1]):
        if not PYTHON.fullmatch(Path(word).name):
            continue
        target = words[index + 1]
        if target == "-m" and index + 2 < len(words):
            return Entry(words[index + 2], (root,))
        if target.endswith(".py"):
            script = (root / target).resolve()
            return Entry(script.stem, (script.parent, root))
    return None


def module_files(name: str, search_path: tuple[Path, ...]) -> list[tuple[str, Path]]:
    """``(module name, file)`` for every file importing ``name`` runs: the ``__init__.py`` of each package on the
    way, then the module itself. Empty when ``name`` is not a repository module."""
    parts = name.split(".")
    for base in search_path:
        files = []
        for depth in range(1, len(parts)):
            package = base.joinpath(*parts[:depth])
            if not package.is_dir():
                break
            if (package / "__init__.py").is_file():
                files.append((".".join(parts[:depth]), package / "__init__.py"))
        else:
            last = base.joinpath(*parts)
            if last.with_suffix(".py").is_file():
                return [*files, (name, last.with_suffix(".py"))]
            if (last / "__init__.py").is_file():
                return [*files, (name, last / "__init__.py")]
    return []


def _package_of(module: str, path: Path) -> str:
    """The package relative imports in ``module`` (defined by ``path``) are resolved against."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve_relative(package: str, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` inside ``package``."""
    parts = package.split(".")
    return ".".join([*parts[: len(parts) - level + 1], *([name] if name else [])])


def _import_module_literal(node: ast.Call) -> str | None:
    """The literal absolute name in ``importlib.import_module("a.b")`` / ``import_module("a.b")``, else None."""
    func = node.func
    called = (
        func.attr
        if isinstance(func, ast.Attribute)
        else func.id
        if isinstance(func, ast.Name)
        else None
    )
    if called != "import_module" or not node.args:
        return None
    first = node.args[0]
    if (
        isinstance(first, ast.Constant)
        and isinstance(first.value, str)
        and not first.value.startswith(".")
    ):
        return first.value
    return None


def imported_names(module: str, path: Path) -> set[str]:
    """Every module name ``path`` (module ``module``) may import, anywhere in its body.

    ``from a import b`` yields both ``a`` and ``a.b`` (``b`` may be a submodule; a name that is not
    one simply resolves to no file).
    """
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module
            if node.level:
                source = _resolve_relative(_package_of(module, path), node.level, node.module)
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and (literal := _import_module_literal(node)):
            names.add(literal)
    return names


def import_closure(entry: Entry, root: Path) -> set[Path]:
    """Every repository file running ``entry`` may execute (absolute paths under ``root``)."""
    entry_files = module_files(entry.module, entry.search_path)
    if (
        entry_files and entry_files[-1][1].name == "__init__.py"
    ):  # python -m package runs package/__main__.py
        entry_files += module_files(f"{entry.module}.__main__", entry.search_path)
    pending, seen = list(entry_files), set()
    while pending:
        module, path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_names(module, path):
            pending.extend(module_files(name, entry.search_path))
    return {path for path in seen if path.resolve().is_relative_to(root.resolve())}


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, POSIX style (as dvc.yaml writes paths)."""
    return path.resolve().relative_to(root.resolve()).as_posix()


def code_deps(deps: list[str]) -> list[str]:
    """The deps that can hold code: every dep without ``${...}`` interpolation, without a trailing slash."""
    return [dep.rstrip("/") or "." for dep in deps if "${" not in dep]


def covers(dep: str, file: str) -> bool:
    """Whether the dep ``dep`` (a file or a folder) covers the repository file ``file``."""
    dep_parts = Path(dep).parts
    return Path(file).parts[: len(dep_parts)] == dep_parts


WINGS = "pipeline"
# Code a stage imports by dotted path at run time (model.builder), invisible to ast: listed on purpose.
RUNTIME_CODE = (
    "user_models",
)  # the library's wings (pipeline/<wing>/) are listed as folders, everything else file by file


def needless_deps(deps: list[str], closure: list[str], root: Path) -> list[str]:
    """Deps a stage could drop: a ``.py`` file outside its closure, or a folder holding Python code none of which it runs.

    A wing folder (``pipeline/data``) counts as used when the stage runs any module in it: ``dvc.yaml``
    lists wings as folders (a change to ``pipeline/export/`` reruns only the stages that use the export wing).
    """
    needless = []
    for dep in deps:
        path = root / dep
        if dep in RUNTIME_CODE:
            continue
        if path.is_dir():
            if any(path.rglob("*.py")) and not any(covers(dep, file) for file in closure):
                needless.append(dep)
        elif dep.endswith(".py") and dep not in closure:
            needless.append(dep)
    return sorted(needless)


def suggested_deps(closure: list[str]) -> list[str]:
    """The code deps ``dvc.yaml`` should list for ``closure``: ``pipeline/<wing>`` folders, other files one by one."""
    deps = set()
    for file in closure:
        parts = Path(file).parts
        deps.add("/".join(parts[:2]) if parts[0] == WINGS and len(parts) > 2 else file)
    return sorted(deps)


def check_stage(name: str, stage: dict, root: Path) -> StageCheck:
    """Compare one ``dvc.yaml`` stage's deps with the import closure of its command."""
    cmd = stage.get("cmd", "")
    cmd = " && ".join(cmd) if isinstance(cmd, list) else cmd
    entry = command_entry(cmd, root)
    closure = sorted(_relative(path, root) for path in import_closure(entry, root)) if entry else []
    deps = code_deps(stage.get("deps", []))
    missing = [file for file in closure if not any(covers(dep, file) for dep in deps)]
    extra = needless_deps(deps, closure, root)
    return StageCheck(name, cmd, tuple(closure), tuple(missing), tuple(extra))


def check_stages(root: Path = REPO) -> list[StageCheck]:
    """:func:`check_stage` for every stage in ``root/dvc.yaml``, in file order."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return [check_stage(name, stage, root) for name, stage in stages.items()]


def describe_problems(check: StageCheck) -> list[str]:
    """One line per problem of ``check``, saying how to fix it in dvc.yaml; empty when its deps match."""
    lines = []
    if check.missing:
        lines.append(
            f"stage '{check.name}' runs {', '.join(check.missing)} but dvc.yaml does not list them: "
            f"add them to stages.{check.name}.deps"
        )
    if check.extra:
        lines.append(
            f"stage '{check.name}' lists {', '.join(check.extra)} but never imports them: drop them from "
            f"stages.{check.name}.deps (a change there would rerun it for nothing)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print every stage's code deps as dvc.yaml should list them (:func:`suggested_deps` of its closure) and
    its problems; 1 when there is any."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO,
        help="the repository holding dvc.yaml (default: this one)",
    )
    checks = check_stages(parser.parse_args(argv).root)
    problems = [line for check in checks for line in describe_problems(check)]
    for check in checks:
        print(f"{check.name}: {check.cmd}")
        print("".join(f"  - {dep}\n" for dep in suggested_deps(list(check.closure))), end="")
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
