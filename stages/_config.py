"""Composing and validating the config: Hydra/OmegaConf in, typed :class:`pipeline.settings.PipelineConfig` out.

With ``stages/_common.py`` and ``stages/_sweep.py`` the only place that imports Hydra/OmegaConf.
Both of them build on this module (and never on each other's internals), so there is no circle.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from pipeline.errors import UserError
from pipeline.settings import MOVED_KEYS, PipelineConfig, validate

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
PARAMS_FILE = "params.yaml"
PARAMS_FLAG = "--params"


def to_settings(cfg) -> PipelineConfig:
    """Merge a composed config into the typed schema and validate it.

    Raises:
        UserError: unknown key, wrong type, or a value out of range, naming the key.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _refuse_moved_keys(cfg)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(PipelineConfig), cfg)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise UserError(f"config: {_describe_omegaconf_error(error)}") from None
    return validate(config)


def moved_key_message(key: str) -> str | None:
    """One line for a key that moved (``evaluate.min_accuracy`` is now ``gate.min_accuracy``), else None."""
    new = MOVED_KEYS.get(key.lstrip("+~"))
    return (
        f"config: {key.lstrip('+~')} moved to {new}: rename it in conf/ or the override"
        if new
        else None
    )


def _refuse_moved_keys(cfg) -> None:
    section = cfg.get("evaluate") if hasattr(cfg, "get") else None
    for name in section or {}:
        message = moved_key_message(f"evaluate.{name}")
        if message:
            raise UserError(message)


def _describe_omegaconf_error(error) -> str:
    key = getattr(error, "full_key", None) or ""
    message = str(error).splitlines()[0]
    if "not in struct" in message or "Key '" in message and "not" in message:
        return f"unknown key '{key}': check its spelling against conf/ (python -m stages.ingest --cfg job shows every key)"
    if "Missing mandatory value" in message:
        return f"'{key}' has no value: set it in conf/ or override {key}=..."
    return f"'{key}': {message}: fix the value in conf/ or the override"


def _hydra_error_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    missing = re.search(
        r"Could not find '([^/']+)/([^']+)'.*?Available options in '[^']+':\s*(.*?)(?:$| Config search path)",
        text,
    )
    if missing:
        group, option, options = missing.groups()
        return f"config: unknown {group} '{option}': choose one of {', '.join(options.split())}"
    unknown = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' is not in struct", text
    )
    if unknown and moved_key_message(unknown.group(1)):
        return moved_key_message(unknown.group(1))
    if unknown:
        return f"config: unknown key '{unknown.group(1)}': check its spelling against conf/ (add + to append a new key on purpose)"
    return f"config: {text}"


# Hydra's command-line options that take the next argument as their value (`--cfg job`), and the
# topics `--info` may take.
VALUE_OPTIONS = (
    "-cd", "--config-dir", "-cn", "--config-name", "-cp", "--config-path",
    "-c", "--cfg", "-p", "--package", "-sc", "--shell-completion", "--experimental-rerun",
)  # fmt: skip
INFO_TOPICS = (["all"], ["config"], ["defaults"], ["defaults-tree"], ["plugins"], ["searchpath"])


def _split_args(argv: list[str]) -> tuple[list[str], dict[str, str], bool]:
    """Overrides, the Hydra options that take a value, and whether this is a multirun."""
    overrides, options, multirun, skip = [], {}, False, None
    for index, arg in enumerate(argv):
        if skip:
            options[skip], skip = arg, None
        elif arg in ("-m", "--multirun"):
            multirun = True
        elif arg in VALUE_OPTIONS or (
            arg in ("-i", "--info") and argv[index + 1 :][:1] in INFO_TOPICS
        ):
            skip = arg
        elif arg.startswith(("--config-dir=", "--config-name=", "--config-path=")):
            name, value = arg.split("=", 1)
            options[name] = value
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, options, multirun


def compose_conf(
    overrides: list[str],
    config_dir: Path = CONF_DIR,
    config_name: str = "config",
    hydra_node: list | None = None,
):
    """Compose ``conf/`` with ``overrides`` (as Hydra and DVC's Hydra mode do), resolved.

    ``hydra_node``: a list that receives the composition's unresolved ``hydra`` node (its logging
    settings, for a run outside Hydra's app: :func:`precheck_overrides`).

    Raises:
        UserError: an unknown group option or key, in one line listing the valid choices.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    user_overrides = [item for item in overrides if not item.startswith(("hydra.", "hydra/"))]
    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            cfg = compose(
                config_name=config_name,
                overrides=user_overrides,
                return_hydra_config=hydra_node is not None,
            )
        if hydra_node is not None:
            with open_dict(cfg):
                hydra_node.append(cfg.pop("hydra"))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as error:
        raise UserError(_hydra_error_line(error)) from None
    return cfg


def precheck_overrides(argv: list[str]):
    """Compose once with the command line's overrides so config mistakes become one line.

    Hydra's own report of a bad override spans several lines; this runs the same composition
    first and raises :class:`UserError` instead. Multiruns are left to Hydra (sweep syntax).

    Returns:
        ``(settings, hydra)`` for a plain command line (overrides only: no Hydra option, no ``hydra.``
        or ``hydra/`` override), which the stage then runs with this composition instead of
        composing twice more in Hydra's app (~0.4 s each; ``stages/_common.py``); ``None``
        otherwise.
    """
    overrides, options, multirun = _split_args(argv)
    if multirun:
        return None
    config_dir = Path(options.get("-cd") or options.get("--config-dir") or CONF_DIR)
    config_name = options.get("-cn") or options.get("--config-name") or "config"
    plain = len(overrides) == len(argv) and not any(
        item.startswith(("hydra.", "hydra/", "+hydra", "~hydra")) for item in overrides
    )
    hydra_node = [] if plain else None
    config = to_settings(compose_conf(overrides, config_dir, config_name, hydra_node))
    if not plain or not _hydra_run_is_a_plain_call(hydra_node[0]):
        return None
    return config, hydra_node[0]


def _hydra_run_is_a_plain_call(hydra) -> bool:
    """Whether Hydra's app, for a single run under this ``hydra`` node, would do no more than set
    up its job logging and call the task: it runs in place (``run.dir`` ``.``, no chdir), saves no
    config (``output_subdir`` null), sets no environment variables, and its only callback is ours
    (a no-op outside sweeps). Anything else in conf/ sends the stage through Hydra's app."""
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(hydra, resolve=False)
    return (
        node["run"]["dir"] == "."
        and not node["job"]["chdir"]
        and node["output_subdir"] is None
        and not node["job"]["env_set"]
        and set(node.get("callbacks") or {}) <= {"sweep_summary"}
    )


def load_params(path: Path):
    """Read a composed ``params.yaml`` (one clear line if it is missing or not YAML)."""
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path} not found: run `python -m stages.compose` (or `dvc repro`) to compose it from conf/"
        )
    try:
        return OmegaConf.load(path)
    except Exception as error:  # yaml.YAMLError and OmegaConf errors alike
        raise UserError(
            f"{path} is not valid YAML ({str(error).splitlines()[0]}): rerun `python -m stages.compose`"
        ) from None


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        items = {}
        for key, item in value.items():
            items.update(_flatten(item, f"{prefix}{key}."))
        return items or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): value}


def config_differences(left, right) -> list[str]:
    """Dotted keys whose values differ between two configs (either OmegaConf or plain dicts)."""
    from omegaconf import OmegaConf

    def plain(cfg):
        return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg

    flat_left, flat_right = _flatten(plain(left)), _flatten(plain(right))
    return sorted(
        key
        for key in flat_left.keys() | flat_right.keys()
        if flat_left.get(key, KeyError) != flat_right.get(key, KeyError)
    )


def check_params_fresh(path: Path, cfg) -> None:
    """Refuse a composed file that disagrees with ``conf/`` unless DVC composed it for an experiment.

    Raises:
        UserError: naming the keys that differ and the command that recomposes the file.
    """
    if os.environ.get("DVC_EXP_NAME"):
        return  # `dvc exp run` composed conf/ plus its -S overrides into the file moments ago
    differences = config_differences(cfg, compose_conf([]))
    if differences:
        shown = ", ".join(differences[:5]) + (
            f" and {len(differences) - 5} more" if len(differences) > 5 else ""
        )
        raise UserError(
            f"{path} is stale: it disagrees with conf/ at {shown}; run `dvc repro` "
            "(its compose stage rewrites it) or `python -m stages.compose`"
        )


def setup_logging() -> None:
    """The logging Hydra's ``job_logging: stdout`` gives, for entry points that bypass Hydra."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)


def report_user_error(error: UserError) -> None:
    """Print the one-line message and exit non-zero (no traceback)."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
