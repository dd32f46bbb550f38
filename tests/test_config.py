"""Malformed configs: one clear line per problem naming the field, exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.config import ConfigError
from pipeline.loading import load_config, parse_config
from tests.conftest import TINY, run_cli, tiny_config, write_config

TINY_CORE = TINY["evals"]["core"]


def problems_of(cfg: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(cfg)
    return err.value.problems


def test_tiny_config_is_valid() -> None:
    cfg = parse_config(tiny_config())
    assert cfg.model.layer == 3
    assert cfg.saes[0].seeds == [0]


def test_wrong_type_names_field_and_value() -> None:
    cfg = tiny_config(activations={"n_tokens": "lots"})
    [line] = problems_of(cfg)
    assert line.startswith("activations.n_tokens: bad value 'lots'")
    assert "integer" in line


def test_unknown_key_is_an_error() -> None:
    cfg = tiny_config()
    cfg["saes"][0]["lr_rate"] = 0.1
    [line] = problems_of(cfg)
    assert line.startswith("saes.0.lr_rate: unknown key")


def test_missing_model() -> None:
    cfg = tiny_config()
    del cfg["model"]
    assert problems_of(cfg) == ["model: required field is missing (or give `synthetic:` instead)"]


def test_negative_sizes_each_reported() -> None:
    cfg = tiny_config(activations={"n_tokens": -5, "contexts_per_shard": 0})
    cfg["saes"][0]["d_sae"] = -1
    lines = problems_of(cfg)
    assert len(lines) == 3
    assert any(line.startswith("activations.n_tokens: bad value -5: Input should be greater than 0") for line in lines)
    assert any(line.startswith("activations.contexts_per_shard: bad value 0") for line in lines)
    assert any(line.startswith("saes.0.d_sae: bad value -1") for line in lines)


@pytest.mark.parametrize(
    ("hook", "expected"),
    [
        ("blocks.3.attn_out", "must look like 'blocks.<layer>.hook_resid_post'"),
        ("blocks.30.hook_resid_post", "hook layer 30 does not exist: SmolLM2-135M-Instruct has layers 0..29"),
    ],
)
def test_unknown_hook(hook: str, expected: str) -> None:
    lines = problems_of(tiny_config(model={"hook": hook}))
    assert len(lines) == 1 and expected in lines[0]
    assert lines[0].startswith("model")


def test_unknown_shipped_corpus_lists_choices() -> None:
    [line] = problems_of(tiny_config(data={"name": "imdb"}))
    assert "unknown shipped corpus 'imdb'" in line and "rotten_tomatoes" in line


def test_k_must_fit_in_width() -> None:
    cfg = tiny_config()
    cfg["saes"][0]["k"] = 999
    [line] = problems_of(cfg)
    assert "k=999 must be smaller than d_sae=256" in line


def test_cli_exit_code_2_and_nothing_written(tmp_path: Path) -> None:
    cfg = tiny_config(activations={"n_tokens": -1})
    path = write_config(tmp_path, cfg)
    artifacts = tmp_path / "artifacts"
    proc = run_cli("run", str(path), artifacts=artifacts, check=False)
    assert proc.returncode == 2
    assert "activations.n_tokens: bad value -1" in proc.stderr
    assert not artifacts.exists()


def test_invalid_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmodel: [unclosed\n")
    assert main(["plan", str(path), "--artifacts", str(tmp_path / "a")]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_config_found_by_name_in_configs_dir() -> None:
    cfg, path = load_config("gemma2b_l12")
    assert path.name == "gemma2b_l12.yaml"
    assert cfg.model.hook == "blocks.12.hook_resid_post"
    assert cfg.saes[0].d_sae == 16384


def test_shipped_configs_are_valid() -> None:
    for path in (Path(__file__).parent.parent / "configs").glob("*.yaml"):
        parse_config(yaml.safe_load(path.read_text()), str(path))


def test_plan_of_the_gemma_config_works_offline(tmp_path: Path) -> None:
    proc = run_cli("plan", "gemma2b_l12", artifacts=tmp_path / "a")
    for label in ("activations", "train:batchtopk_16k_k64-s0", "eval_core:batchtopk_16k_k64-s0", "report",
                  "eval_prep:sparse_probing:LabHC/bias_in_bios_class_set1", "eval_prep:scr_tpp", "eval_tpp:batchtopk_16k_k64-s0",
                  "eval_prep:unlearning", "eval_unlearning:batchtopk_16k_k64-s0"):  # fmt: skip
        assert label in proc.stderr
    # activations, train, report, 8 per-SAE evals, 1 (core) + 8 + 5 + 1 + 1 + 1 (autointerp) + 1 (unlearning) prep
    # stages: all missing, nothing downloaded
    assert proc.stderr.count("missing") == 29
    assert "934.0 GB" in proc.stderr  # 200M tokens x (2304 x 2 + 16) bytes x 1.01: the activations' bytes
    from pipeline.loading import load_config
    from pipeline.plan import build_plan

    prep = next(s for s in build_plan(load_config("gemma2b_l12")[0]) if s.label == "eval_prep:unlearning")
    assert prep.params["model"]["name"] == "google/gemma-2-2b-it"  # SAEBench's instruct model, base-model SAEs


def test_recipe_pieces_need_the_saepipe_trainer() -> None:
    cfg = tiny_config()
    cfg["saes"][0] |= {"trainer": "sae_lens", "recipe": {"lista": {"eta": 0.3}}}
    [line] = problems_of(cfg)
    assert "trainer 'sae_lens' trains topk, batchtopk (+ matryoshka) and jumprelu without extra pieces" in line and "['lista']" in line


def test_matryoshka_levels_must_end_at_d_sae() -> None:
    cfg = tiny_config()
    cfg["saes"][0]["recipe"] = {"matryoshka": {"levels": [32, 128]}}
    [line] = problems_of(cfg)
    assert "matryoshka.levels must end at d_sae=256" in line


def test_identical_sae_specs_are_rejected() -> None:
    cfg = tiny_config()
    cfg["saes"].append({**cfg["saes"][0], "name": "copy"})
    [line] = problems_of(cfg)
    assert "'btk' and 'copy' have the same settings and share seeds [0]" in line


def test_synthetic_run_takes_no_model() -> None:
    cfg = tiny_config(synthetic={"num_features": 64, "hidden_dim": 16, "hierarchy": None})
    [line] = problems_of(cfg)
    assert line.startswith("synthetic: a synthetic run takes no `model` or `data`")


def test_eval_sections_are_checked_against_the_evals_own_settings() -> None:
    evals = {
        "absorption": {"enabled": True, "max_k_valu": 3},
        "scr": {"enabled": True, "train_set_size": 10},
        "unlearning": {"enabled": False, "multiplier": [25]},  # a typo in a section that is off still counts
    }
    with pytest.raises(ConfigError) as err:
        parse_config(tiny_config(evals=evals))
    problems = err.value.problems
    assert any(p.startswith("evals.absorption.max_k_valu: unknown key") for p in problems), problems
    assert any(p.startswith("evals.scr") and "multiple of 4" in p for p in problems), problems
    assert any(p.startswith("evals.unlearning.multiplier: unknown key") for p in problems), problems
    assert all("\n" not in p for p in problems)
    with pytest.raises(ConfigError, match=r"evals.sae_probes.ks.0: bad value 3"):
        parse_config(tiny_config(evals={"sae_probes": {"enabled": True, "ks": [3]}}))


def test_scr_and_tpp_share_one_prep_unless_their_data_differs() -> None:
    from pipeline.plan import build_plan

    def preps(scr: dict, tpp: dict) -> list[str]:
        cfg = parse_config(tiny_config(evals={"scr": {"enabled": True, **scr}, "tpp": {"enabled": True, **tpp}}))
        return [s.label for s in build_plan(cfg) if s.kind == "eval_prep" and s.params["eval"] == "scr_tpp"]

    assert preps({}, {"n_values": [2, 5]}) == ["eval_prep:scr_tpp"]  # per-SAE settings only: shared
    two = preps({}, {"train_set_size": 200})
    assert len(two) == 2 and two[0] == "eval_prep:scr_tpp" and two[1].startswith("eval_prep:scr_tpp#")


def test_unknown_eval_section_names_the_choices() -> None:
    [line] = problems_of(tiny_config(evals={"nosuch": {"enabled": True}}))
    assert line.startswith("evals.nosuch: unknown eval; choose one of [") and "'sparse_probing'" in line


def test_slurm_stage_resources_must_name_a_stage_kind() -> None:
    [line] = problems_of(tiny_config(executor={"kind": "slurm", "slurm": {"stages": {"trian": {"cpus": 2}, "train": {"cpus": 2}}}}))
    assert line.startswith("executor.slurm.stages.trian: unknown stage kind; choose one of [") and "'eval_core'" in line


def test_an_eval_may_run_in_its_own_model() -> None:
    """SAEBench runs unlearning on gemma-2-2b-it with SAEs of gemma-2-2b: the eval's model keys its prep."""
    from pipeline.plan import build_plan

    def core_stages(core: dict) -> tuple:
        stages = build_plan(parse_config(tiny_config(evals={"core": {**TINY_CORE, **core}})))
        return next(s for s in stages if s.kind == "eval_prep"), next(s for s in stages if s.kind == "eval_core")

    own = {"source": "hub", "name": "HuggingFaceTB/SmolLM2-135M", "hook": "blocks.3.hook_resid_post"}
    base_prep, base_eval = core_stages({})
    prep, ev = core_stages({"model": own})
    assert prep.key != base_prep.key and ev.key != base_eval.key
    assert prep.params["model"]["name"] == "HuggingFaceTB/SmolLM2-135M" and ev.params["model"]["name"] == own["name"]
    assert base_prep.params["model"]["name"] == "SmolLM2-135M-Instruct" and "model" not in base_eval.params
    [line] = problems_of(tiny_config(evals={"core": {"model": {**own, "hook": "blocks.3.attn"}}}))
    assert line.startswith("evals.core.model.hook: bad value")
