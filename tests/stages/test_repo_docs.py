"""The README's two commands, .ci/run and the users' CI recipe stay consistent, and the docs stay
honest: every command they show names a real stage, script, console script, DVC subcommand and
config option, every relative link resolves, and the front door stays short."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

from helpers.config import REPO

DOC_PAGES = (
    "configuration",
    "data-sources",
    "training-and-clusters",
    "models",
    "sweeps",
    "export-and-serving",
    "benchmarks",
    "versions",
    "architecture",
)
MAX_LINES = {"README.md": 200, "docs/architecture.md": 150}

# DVC 3's subcommands (`dvc --help`), and the second word of the ones the docs use with one.
DVC_COMMANDS = frozenset(
    {
        "add",
        "artifacts",
        "cache",
        "check-ignore",
        "checkout",
        "commit",
        "completion",
        "config",
        "dag",
        "data",
        "destroy",
        "diff",
        "doctor",
        "du",
        "exp",
        "experiments",
        "fetch",
        "freeze",
        "gc",
        "get",
        "get-url",
        "import",
        "import-db",
        "import-url",
        "init",
        "install",
        "list",
        "list-url",
        "ls",
        "ls-url",
        "metrics",
        "move",
        "mv",
        "params",
        "plots",
        "pull",
        "push",
        "queue",
        "remote",
        "remove",
        "repro",
        "rm",
        "root",
        "stage",
        "status",
        "studio",
        "unfreeze",
        "unprotect",
        "update",
        "version",
    }
)
EXP_COMMANDS = frozenset(
    {
        "apply",
        "branch",
        "clean",
        "diff",
        "list",
        "ls",
        "pull",
        "push",
        "remove",
        "rm",
        "rename",
        "run",
        "save",
        "show",
    }
)
DVC_SUBCOMMANDS = {
    "exp": EXP_COMMANDS,
    "experiments": EXP_COMMANDS,
    "plots": {"show", "diff", "modify", "templates"},
    "metrics": {"show", "diff"},
    "params": {"diff"},
    "queue": {"start", "stop", "status", "logs", "remove", "kill"},
}

# Where a command starts inside a code line or span: at its start or after a space, quote or `(`
# (so `RAY_ADDRESS=... python -m stages.train` and `sh -c "cd ... && python -m ..."` count too).
COMMAND_START = re.compile(
    r"(?:^|(?<=[\s\"'(]))(?:python -m stages\.|python bench/|python tools/|kp-|dvc\s)"
)
GROUP_OPTION = re.compile(
    r"^\+?([a-z_]+)=(.+)$"
)  # `model=mlp`; `train.epochs=3` has a dot: a key, not a group
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def readme_command(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```\n(.+?)\n```", text, re.S)
    assert match, f"README has no {marker} block"
    return match.group(1).strip()


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def split_fences(text: str) -> tuple[list[str], str]:
    """The lines inside fenced code blocks, and the prose outside them."""
    code, prose, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append("")
            continue
        (code if fenced else prose).append(line)
    return code, "\n".join(prose)


def code_snippets(text: str) -> list[str]:
    """Every line of a fenced code block and every inline code span (a span may wrap a line)."""
    code, prose = split_fences(text)
    spans = [
        span
        for paragraph in re.split(r"\n\s*\n", prose)
        for span in re.findall(r"`([^`]+)`", " ".join(paragraph.splitlines()))
    ]
    return code + spans


def commands(text: str) -> list[str]:
    """The commands the docs show: `python -m stages.*`, `python bench|tools/*.py`, `kp-*`, `dvc *`."""
    found = []
    for snippet in code_snippets(text):
        snippet = re.sub(r"^\s*\$\s+", "", snippet)  # a shell prompt
        snippet = re.sub(r"\s+#\s.*$", "", snippet)  # a trailing comment
        for part in re.split(r"&&|\|\|", snippet):
            match = COMMAND_START.search(part)
            if match:
                found.append(part[match.start() :].strip())
    return found


def console_scripts() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def group_option_problems(words: list[str]) -> list[str]:
    """`group=option` words naming a `conf/<group>/` that has no `<option>.yaml`."""
    problems = []
    for word in words:
        match = GROUP_OPTION.match(word.strip("\"'"))
        if not match or match.group(1) == "hydra" or not (REPO / "conf" / match.group(1)).is_dir():
            continue  # a key (`train.epochs=3`), `hydra/...`, or no config group at all (`seed=1`)
        group, value = match.groups()
        for option in re.split(r"[,|]", value):
            if option in ("null", "") or any(mark in option for mark in "<>.$({"):
                continue  # a placeholder (`data=<name>`, `data=...`) or a sweep expression
            if not (REPO / "conf" / group / f"{option}.yaml").is_file():
                choices = sorted(path.stem for path in (REPO / "conf" / group).glob("*.yaml"))
                problems.append(
                    f"{group}={option}: no conf/{group}/{option}.yaml (options: {', '.join(choices)})"
                )
    return problems


def command_problems(text: str) -> list[str]:
    """What is wrong with the commands in ``text``: a stage module, script, console script or DVC
    subcommand that does not exist, or a config group option that has no file."""
    problems, scripts = [], console_scripts()
    for command in commands(text):
        words = command.split()
        if command.startswith("python -m stages."):
            module = words[2].removeprefix("stages.")
            if not (
                (REPO / "stages" / f"{module}.py").is_file()
                or (REPO / "stages" / module / "__main__.py").is_file()
            ):
                problems.append(f"`{command}`: no stages/{module}.py")
        elif command.startswith(("python bench/", "python tools/")):
            if not words[1].endswith(".py") or not (REPO / words[1]).is_file():
                problems.append(f"`{command}`: no {words[1]}")
        elif command.startswith("kp-"):
            if words[0] not in scripts:
                problems.append(
                    f"`{command}`: {words[0]} is not in pyproject.toml's [project.scripts] ({', '.join(sorted(scripts))})"
                )
        else:
            sub = words[1] if len(words) > 1 else ""
            if sub not in DVC_COMMANDS:
                problems.append(f"`{command}`: dvc has no subcommand {sub!r}")
            elif (
                sub in DVC_SUBCOMMANDS
                and len(words) > 2
                and not words[2].startswith("-")
                and words[2] not in DVC_SUBCOMMANDS[sub]
            ):
                problems.append(f"`{command}`: dvc {sub} has no subcommand {words[2]!r}")
        problems += [f"`{command}`: {problem}" for problem in group_option_problems(words)]
    return problems


def github_slugs(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a markdown text."""
    slugs, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", split_fences(text)[1], re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        slugs.add(slug if count == 0 else f"{slug}-{count}")
    return slugs


def link_problems(path: Path, text: str) -> list[str]:
    """Relative links in ``text`` (the file at ``path``) to a missing file or a missing heading."""
    problems = []
    for target in LINK.findall(split_fences(text)[1]):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto:
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve()
        if file and not linked.exists():
            problems.append(f"{path.relative_to(REPO)}: link to {target}: no file {file}")
        elif (
            anchor
            and (not file or linked.suffix == ".md")
            and anchor not in github_slugs(linked.read_text() if file else text)
        ):
            problems.append(
                f"{path.relative_to(REPO)}: link to {target}: {file or path.name} has no heading #{anchor}"
            )
    return problems


def readme_links() -> set[Path]:
    text = split_fences((REPO / "README.md").read_text())[1]
    return {
        (REPO / target.partition("#")[0]).resolve()
        for target in LINK.findall(text)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and target.partition("#")[0]
    }


def test_quickstart_is_two_commands_sharing_one_install():
    run, test = readme_command("quickstart-run"), readme_command("quickstart-test")
    assert run.endswith("&& dvc repro") and test.endswith("&& python -m pytest")
    assert run.rsplit("&&", 1)[0] == test.rsplit("&&", 1)[0]
    assert "requirements.lock" in run and "npm ci --prefix tools/tfjs_runner" in run


def test_ci_runs_the_readme_test_command_verbatim():
    result = subprocess.run(
        ["bash", str(REPO / ".ci" / "run")],
        env={**os.environ, "CI_RUN_PRINT_ONLY": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"+ {readme_command('quickstart-test')}"


def test_users_ci_recipe_installs_like_the_readme_and_runs_the_smoke_preset():
    workflow = (REPO / ".github" / "workflows" / "pipeline.yml").read_text()
    install = readme_command("quickstart-run").rsplit("&&", 1)[0].strip()
    assert f"run: {install}" in workflow
    assert (
        "experiment: smoke" in workflow
        and "dvc repro" in workflow
        and "dvc metrics show" in workflow
    )
    assert (REPO / "conf" / "experiment" / "smoke.yaml").is_file()
    assert (
        "- experiment: null" in (REPO / "conf" / "config.yaml").read_text()
    )  # what the workflow's sed edits


def test_every_command_in_the_docs_exists():
    found = {path: commands(path.read_text()) for path in doc_files()}
    assert sum(map(len, found.values())) > 20, (
        "the command finder found almost nothing: is the pattern broken?"
    )
    problems = [
        f"{path.relative_to(REPO)}: {problem}"
        for path in found
        for problem in command_problems(path.read_text())
    ]
    assert problems == [], "\n".join(problems)


def test_every_group_option_the_docs_name_inline_exists():
    """Also outside commands: `cluster=address`, `augment=none|light|strong` in prose."""
    problems = [
        f"{path.relative_to(REPO)}: {problem}"
        for path in doc_files()
        for snippet in code_snippets(path.read_text())
        for problem in group_option_problems(snippet.split())
    ]
    assert problems == [], "\n".join(problems)


def test_every_relative_link_in_the_docs_resolves():
    problems = [
        problem for path in doc_files() for problem in link_problems(path, path.read_text())
    ]
    assert problems == [], "\n".join(problems)


def test_the_readme_links_every_docs_page():
    linked = readme_links()
    for page in DOC_PAGES:
        path = REPO / "docs" / f"{page}.md"
        assert path.is_file(), f"docs/{page}.md is missing"
        assert path.resolve() in linked, f"README.md does not link docs/{page}.md"
    unlisted = [path.name for path in (REPO / "docs").glob("*.md") if path.resolve() not in linked]
    assert unlisted == [], f"docs pages the README does not link: {unlisted}"


def test_the_front_door_and_the_architecture_page_stay_short():
    for name, limit in MAX_LINES.items():
        lines = len((REPO / name).read_text().splitlines())
        assert lines <= limit, (
            f"{name} has {lines} lines, at most {limit}: move detail to a docs/ page"
        )


def test_the_checks_catch_broken_commands_options_and_links():
    """Each check fails on a broken example (so a green run means the docs were checked)."""
    bogus = "\n".join(
        [
            "```",
            "python -m stages.trian model=mlp",
            "python bench/nope.py --epochs 1",
            "python tools/nope.py",
            "kp-nope exports/saved_model x.png",
            "dvc reprodcue",
            "dvc exp runn -S train.epochs=5",
            "dvc exp run -S model=mlpp",
            "$ python -m stages.train -m model=mlp,cnnn train.epochs=3 hydra/launcher=ray_trials",
            "```",
            "Inline: `RAY_ADDRESS=x python -m stages.train cluster=nowhere` and `dvc repro && dvc plots shw`.",
        ]
    )
    problems = "\n".join(command_problems(bogus))
    for broken in (
        "stages/trian.py",
        "bench/nope.py",
        "tools/nope.py",
        "kp-nope",
        "'reprodcue'",
        "'runn'",
        "model=mlpp",
        "model=cnnn",
        "cluster=nowhere",
        "'shw'",
    ):
        assert broken in problems, f"{broken} not caught:\n{problems}"
    assert len(command_problems(bogus)) == 10, (
        problems
    )  # and nothing valid flagged (train.epochs=3, hydra/...)
    assert group_option_problems(["augment=none|light|heavy"]) and not group_option_problems(
        ["augment=none|light"]
    )

    page = REPO / "docs" / "bogus.md"  # never written: the text is checked as if it lived there
    links = "[a](missing.md), [b](configuration.md#no-such-heading), [c](configuration.md#the-gates-keys), [d](#here), [e](#there)\n\n## Here"
    problems = link_problems(page, links)
    assert (
        len(problems) == 3
        and "missing.md" in problems[0]
        and "#no-such-heading" in problems[1]
        and "#there" in problems[2]
    ), problems
