"""Reading a config: ``NAME`` (from configs/) or a path, YAML, validated before anything is computed.

One layer above ``pipeline.config``: it plugs each eval's own settings class (``evals.registry``) into
the ``evals:`` section, and checks ``executor.slurm.stages`` against the stage registry, so the config
types import no eval and no stage. Every problem is one line naming the field, the value, what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.config import ConfigError, EvalConfig, EvalsSpec, PipelineConfig
from pipeline.config.errors import format_error

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


def resolve_config_path(name_or_path: str) -> Path:
    """A path as given, else ``configs/NAME`` (with or without .yaml)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    for candidate in (CONFIGS_DIR / name_or_path, CONFIGS_DIR / f"{name_or_path}.yaml"):
        if candidate.exists():
            return candidate
    raise ConfigError(name_or_path, [f"no such config file (looked at {path} and in {CONFIGS_DIR})"])


def eval_configs() -> dict[str, type[EvalConfig]]:
    """Each registered eval's settings class, by section name."""
    from evals.registry import EVALS

    return {name: d.config for name, d in EVALS.items()}


def eval_sections(raw: Any, configs: Mapping[str, type[EvalConfig]]) -> tuple[dict[str, EvalConfig], list[str]]:
    """Every registered eval's settings (its defaults where the config has no section), and one line per
    problem. A section that is switched off is checked too: a typo there is still a typo."""
    given = raw if isinstance(raw, dict) else {}
    problems = [
        f"evals.{name}: unknown eval; choose one of {sorted(configs)}"
        for name in given
        if name not in configs and name not in EvalsSpec.model_fields
    ]
    sections: dict[str, EvalConfig] = {}
    for name, cls in configs.items():
        try:
            sections[name] = cls.model_validate({} if given.get(name) is None else given[name])
        except ValidationError as exc:
            problems += [format_error({**e, "loc": ("evals", name, *e["loc"])}) for e in exc.errors()]
    return sections, problems


def slurm_stage_problems(cfg: PipelineConfig) -> list[str]:
    """``executor.slurm.stages`` keys must be stage kinds (a misspelt one would silently get the defaults)."""
    named = set(cfg.executor.slurm.stages)
    if not named:
        return []  # nothing to check: do not import the stages
    from pipeline.stages.registry import KINDS

    return [f"executor.slurm.stages.{k}: unknown stage kind; choose one of {sorted(KINDS)}" for k in sorted(named - set(KINDS))]


def parse_config(data: Any, source: str = "<config>", configs: Mapping[str, type[EvalConfig]] | None = None) -> PipelineConfig:
    """A validated config whose eval sections are their evals' typed settings (``configs``: the registry's)."""
    if not isinstance(data, dict):
        raise ConfigError(source, [f"the file must hold a mapping of settings, got {type(data).__name__}"])
    raw_evals = data.get("evals")
    sections, eval_problems = eval_sections(raw_evals, eval_configs() if configs is None else configs)
    shared = {k: v for k, v in raw_evals.items() if k in EvalsSpec.model_fields} if isinstance(raw_evals, dict) else raw_evals
    if shared is None:  # `evals:` with nothing under it
        shared = {}
    problems: list[str] = []
    try:
        cfg = PipelineConfig.model_validate({**data, "evals": shared})
    except ValidationError as exc:
        problems = [line for e in exc.errors() for line in format_error(e).split("\n")]
    else:
        problems = slurm_stage_problems(cfg)
    if problems or eval_problems:
        raise ConfigError(source, problems + eval_problems)
    return cfg.model_copy(update={"evals": EvalsSpec(max_chunk_mib=cfg.evals.max_chunk_mib, **sections)})


def load_config(name_or_path: str) -> tuple[PipelineConfig, Path]:
    path = resolve_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {exc}".replace("\n", " ")]) from None
    return parse_config(data, str(path)), path
