"""The layout holds: wings over a shared base, no import circles, no upward imports, no stage
module importing another stage's module, and settings' plain name tuples matching the registries."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
from dvc_deps import imported_names, module_files  # noqa: E402

BASE = (
    "pipeline",
    "pipeline.errors",
    "pipeline.io",
    "pipeline.env",
    "pipeline.progress",
    "pipeline.settings",
)
LAYERS = {
    "data": 1,
    "training": 2,
    "evaluation": 3,
    "export": 4,
}  # base 0; stages and plugins above all
STAGE_MODULES = (
    "pipeline.data.ingest",
    "pipeline.data.preprocess",
    "pipeline.training.train",
    "pipeline.evaluation.evaluate",
    "pipeline.evaluation.gate",
    "pipeline.export.run",
    "pipeline.export.predict",
)


def repository_modules() -> dict[str, Path]:
    modules = {}
    for folder in ("pipeline", "stages", "hydra_plugins"):
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = repository_modules()


def direct_imports(module: str) -> set[str]:
    """The repository modules ``module`` imports itself (a package's ``__init__`` that Python runs on
    the way is not an edge: it is not what the code asked for)."""
    found = set()
    for name in imported_names(module, MODULES[module]):
        files = module_files(name, (REPO,))
        if files and files[-1][0] == name and name != module:
            found.add(name)
    return found


GRAPH = {module: direct_imports(module) for module in MODULES}


def layer(module: str) -> int:
    if module in BASE:
        return 0
    parts = module.split(".")
    if parts[0] == "pipeline":
        return LAYERS[parts[1]]
    return 9  # stages/, hydra_plugins/


def test_every_library_module_sits_in_the_base_or_a_wing():
    stray = [
        module
        for module in MODULES
        if module.startswith("pipeline")
        and module not in BASE
        and module.split(".")[1] not in LAYERS
    ]
    assert stray == [], f"modules outside the base and the wings {sorted(LAYERS)}: {stray}"


def test_no_import_circles():
    """Tarjan's strongly connected components over every import, function-local ones included."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert circles == [], f"import circles: {circles}"


def test_no_import_from_a_lower_layer_to_a_higher_one():
    upward = [
        (module, target)
        for module, targets in GRAPH.items()
        for target in targets
        if layer(target) > layer(module)
    ]
    assert upward == [], (
        f"lower layers import higher ones (base < data < training < evaluation < export): {upward}"
    )


def test_no_stage_module_imports_another_stages_module():
    """Shared formats (shards, columns, records, model_io, blessing) have modules of their own."""
    crossing = [
        (module, target)
        for module in STAGE_MODULES
        for target in GRAPH[module]
        if target in STAGE_MODULES
    ]
    assert crossing == [], crossing


@pytest.mark.parametrize(
    "names,registry",
    [
        ("SOURCE_NAMES", "pipeline.data.sources:SOURCES"),
        ("MODEL_NAMES", "pipeline.training.models:MODEL_BUILDERS"),
    ],
)
def test_settings_name_tuples_match_the_registries(names, registry):
    import importlib

    import pipeline.settings as settings

    module, attribute = registry.split(":")
    assert sorted(getattr(settings, names)) == sorted(
        getattr(importlib.import_module(module), attribute)
    )
