"""SCR and TPP (evals/scr_tpp/) on the gendered-professions fixture, SmolLM2 layer 3, a trained tiny SAE.

(a) the fixture and the params; (b) parity with sae-bench: the ablate-and-repool step against
``ablated_precomputed_activations``, latent attribution against ``get_effects_per_class_precomputed_acts``,
and whole SCR and TPP runs against sae-bench's ``run_eval_single_dataset`` (its probes, ablations and
metric arithmetic) on the same prompts; (c) prepare + evaluate end to end, including a hand-built SAE
whose two latents span the gender direction, which SCR must find and score clearly positive.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from sae_bench.evals.scr_and_tpp import main as saebench
from sae_bench.evals.scr_and_tpp.eval_config import ScrAndTppEvalConfig
from sae_bench.evals.sparse_probing import probe_training
from sae_bench.sae_bench_utils import activation_collection, dataset_info
from sae_lens import SAE, JumpReLUSAE, JumpReLUSAEConfig

from evals.common import quiet
from evals.contract import EvalEnv, Prepared, prepare_in_memory
from evals.fixtures import gendered_professions as gp
from evals.scr_tpp.ablation import ablated_pooled, load_split, node_effects, score_run, summed_latents
from evals.scr_tpp.activations import tokenize
from evals.scr_tpp.config import ScrTppParams
from evals.scr_tpp.data import SCR_ABLATED, TPP_CLASSES, build_runs
from evals.scr_tpp.evaluate import evaluate_scr, evaluate_tpp
from evals.scr_tpp.output import eval_config
from evals.scr_tpp.prepare import prepare
from evals.scr_tpp.probes import probe_from
from pipeline.models.cache import get_model
from pipeline.progress import Reporter

QUIET = Reporter(enabled=False)
SAEBENCH_NAME = "LabHC/bias_in_bios_class_set1"  # the name sae-bench's runner knows; our prompts are fed in
PARITY = {"train_set_size": 40, "test_set_size": 20, "context_length": 32, "n_values": [2, 10, 50]}
TPP_PARTS = ("total_metric", "intended_diff_only", "unintended_diff_only")
TWO_CLASSES = ["21", "13"]  # professor, nurse: with two TPP classes every sae-bench draw is a whole class


# --- (a) fixture and params ----------------------------------------------------------------------


def test_fixture_is_deterministic_balanced_disjoint_and_bias_in_bios_shaped() -> None:
    train, test = gp.generate(12, 6)
    again_train, again_test = gp.generate(12, 6)
    assert train.equals(again_train) and test.equals(again_test)
    assert list(train.columns) == ["hard_text", "profession", "gender"]
    assert train.groupby(["profession", "gender"]).size().eq(12).all()
    assert test.groupby(["profession", "gender"]).size().eq(6).all()
    assert set(train.profession) == {dataset_info.profession_dict[p] for p in gp.PROFESSIONS}
    assert set(train.gender) == {0, 1}
    assert train.hard_text.is_unique and not set(train.hard_text) & set(test.hard_text)
    assert not train.equals(gp.generate(12, 6, seed=1)[0])
    # SAEBench's pairs and class_set1 are all there
    for pair in ScrAndTppEvalConfig().column1_vals_lookup[SAEBENCH_NAME]:
        assert set(pair) <= set(gp.PROFESSIONS)
    assert {dataset_info.profession_int_to_str[int(c)] for c in TPP_CLASSES[gp.DATASET_NAME]} <= set(gp.PROFESSIONS)


def test_fixture_spreads_each_attribute_over_several_cues() -> None:
    """No single word gives gender or profession away in every bio: names, honorifics, pronouns, family
    words; workplaces, duties, topics, credentials all vary, and bios never state the job title."""
    train, _ = gp.generate(60, 1)
    words = [set(re.findall(r"[a-z']+", t.lower())) for t in train.hard_text]
    for column in ("gender", "profession"):
        for value in train[column].unique():
            inside = [w for w, v in zip(words, train[column]) if v == value]
            outside = [w for w, v in zip(words, train[column]) if v != value]
            always = set.intersection(*inside)
            # words in every bio of this class are shared with other classes (function words)
            assert all(sum(word in w for w in outside) > 0.3 * len(outside) for word in always), (column, value, always)
    male_names = {n.lower() for n in gp.MALE_NAMES}
    male = [w for w, g in zip(words, train.gender) if g == 0]
    assert 0.3 < sum(bool(w & male_names) for w in male) / len(male) < 1.0  # a name is one cue of several
    titles = re.compile(r"\b(professor|nurse|surgeon|architect|journalist|attorney|teacher)\b")
    assert not any(titles.search(t.lower()) for t in train.hard_text)


def test_params_defaults_and_validation() -> None:
    p = ScrTppParams()
    assert p.dataset_names == [gp.DATASET_NAME] and p.n_values == [2, 5, 10, 20, 50, 100, 500]
    assert p.column1_vals_lookup[gp.DATASET_NAME] == [("professor", "nurse")]
    saebench = ScrAndTppEvalConfig().column1_vals_lookup
    assert {k: v for k, v in p.column1_vals_lookup.items() if k != gp.DATASET_NAME} == saebench  # the copy is sae-bench's
    with pytest.raises(ValidationError):
        p.train_set_size = 8  # frozen
    for bad, match in [
        ({"dataset_names": ["LabHC/bias_in_bios"]}, "unknown"),
        ({"n_values": [3]}, "n_values"),
        ({"train_set_size": 42}, "multiple of 4"),
        ({"column1_vals_lookup": {gp.DATASET_NAME: [("professor", "poet")]}}, "fixture has no"),
        ({"probe_lr": 1e-3, "sae_batchsize": 3}, "Extra inputs"),
    ]:
        with pytest.raises(ValidationError, match=match):
            ScrTppParams(**bad)


def test_hub_dataset_that_cannot_load_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(name: str, *a, **k):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError) as err:
        prepare(EvalEnv(None, True), ScrTppParams(dataset_names=[SAEBENCH_NAME]), None)  # type: ignore[arg-type]
    message = str(err.value)
    assert "\n" not in message and "'LabHC/bias_in_bios'" in message and "HF_DATASETS_OFFLINE" in message


# --- shared: model, trained tiny SAE, prepared data ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_run) -> tuple:
    """The shared tiny run's SAE, and an eval env whose model loader is the process-wide cached model."""
    cfg, store, train = tiny_run
    sae = SAE.load_from_disk(str(store.path("train", train.key) / "sae"))
    return cfg, sae, EvalEnv(cfg.model, cfg.data.prepend_bos, QUIET, "btk-s0", "tiny")


@pytest.fixture(scope="module")
def parity_prep(tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[Prepared, ScrTppParams]:
    """Small prepared data with two TPP classes (every sae-bench draw then takes whole classes)."""
    _, _, env = tiny
    params = ScrTppParams(**PARITY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(TPP_CLASSES, gp.DATASET_NAME, TWO_CLASSES)
        prepared = prepare_in_memory(prepare, env, params, tmp_path_factory.mktemp("parity"), max_bytes=1 << 20)
    return prepared, params


def padded(prepared: Prepared, prefix: str) -> torch.Tensor:
    """The packed token activations back in SAEBench's layout [prompts, context, d_model]: masked positions
    zero (where they sit does not matter to any sum SAEBench takes)."""
    acts, n = prepared.tensor(f"{prefix}_acts"), prepared.tensor(f"{prefix}_n_tokens")
    out = torch.zeros(len(n), prepared.meta["context_length"], acts.shape[1])
    position = torch.arange(out.shape[1])[None, :]
    keep = (position >= 1) & (position <= n[:, None])  # BOS at 0, the tokens, then pad
    out[keep] = acts
    return out


# --- (b) parity with sae-bench --------------------------------------------------------------------


def test_stored_tokens_pool_to_stored_means_and_sit_in_many_chunks(parity_prep) -> None:
    prepared, _ = parity_prep
    assert len(list((prepared.root / "scr_train_acts").glob("part-*"))) >= 2  # 1 MiB bound: chunked
    for prefix in ("scr_train", "tpp_test"):
        dense = padded(prepared, prefix)
        means = activation_collection.create_meaned_model_activations({"x": dense})["x"]
        torch.testing.assert_close(means, prepared.tensor(f"{prefix}_pooled"), rtol=1e-5, atol=1e-5)
        assert prepared.tensor(f"{prefix}_n_tokens").min() >= 10  # real bios, BOS and pad masked


def test_ablate_and_repool_matches_saebench(tiny, parity_prep) -> None:
    """Ours (encode once, subtract the ablated latents' decoder contribution) vs sae-bench's
    ``ablated_precomputed_activations`` (decode twice per ablation) on the same tokens, for latent sets
    that include latents active on the zeroed (masked) positions. Tolerance 1e-4 of the activation scale."""
    _, sae, _ = tiny
    prepared, _ = parity_prep
    dense = padded(prepared, "scr_test")
    n_tokens = prepared.tensor("scr_test_n_tokens")
    summed = summed_latents(prepared.batches("scr_test_acts", 500), n_tokens, sae)
    f_zero = sae.encode(torch.zeros(1, dense.shape[2]))[0]
    at_zero = torch.nonzero(f_zero > 0).flatten()
    most_used = summed.sum(0).topk(20).indices
    g = torch.Generator().manual_seed(0)
    masks = []
    some = torch.randperm(256, generator=g)[:100]
    for chosen in (most_used[:2], most_used, some, torch.cat([at_zero[:5], most_used[:5]])):
        mask = torch.zeros(256, dtype=torch.bool)
        mask[chosen] = True
        masks.append(mask)
    assert len(at_zero) > 0, "the test wants an SAE with latents active on zero input"
    pooled = prepared.tensor("scr_test_pooled")
    scale = pooled.abs().max()
    for mask in masks:
        want = saebench.ablated_precomputed_activations(dense, sae, mask, 125)
        got = ablated_pooled(pooled, summed, n_tokens, dense.shape[1], f_zero, sae.W_dec.detach(), mask)
        assert (got - want).abs().max() <= 1e-4 * scale, (got - want).abs().max()
        assert (want - pooled).abs().max() > 1e-2 * scale  # the ablation does something
    # the masked-position term is real: without it the result is off
    mask = masks[-1]
    no_pad_term = ablated_pooled(pooled, summed, n_tokens, dense.shape[1], 0 * f_zero, sae.W_dec.detach(), mask)
    assert (no_pad_term - saebench.ablated_precomputed_activations(dense, sae, mask, 125)).abs().max() > 1e-3 * scale


def test_latent_attribution_matches_saebench(tiny, parity_prep, monkeypatch: pytest.MonkeyPatch) -> None:
    """``node_effects`` on stored sets vs ``get_effects_per_class_precomputed_acts`` handed the same set
    (its ``prepare_probe_data`` draw replaced by the stored one), for SCR's probes and TPP's."""
    _, sae, _ = tiny
    prepared, _ = parity_prep
    for kind, keys in (("scr", list(SCR_ABLATED)), ("tpp", TWO_CLASSES)):
        run = next(r for r in prepared.meta["runs"] if r["kind"] == kind)
        dense = padded(prepared, f"{kind}_train")
        n_tokens = prepared.tensor(f"{kind}_train_n_tokens")
        means = summed_latents(prepared.batches(f"{kind}_train_acts", 300), n_tokens, sae) / n_tokens[:, None]
        rows_all, labels_all = prepared.tensor(f"{run['id']}_rows"), prepared.tensor(f"{run['id']}_labels")
        weights, biases = prepared.tensor(f"{run['id']}_probe_w"), prepared.tensor(f"{run['id']}_probe_b")
        for key in keys:
            a, b = run["sets"][f"effect:{key}"]
            rows, labels = rows_all[a:b], labels_all[a:b]
            monkeypatch.setattr(probe_training, "prepare_probe_data", lambda *_a, **_k: (dense[rows], labels.int()))
            i = run["chosen"].index(key)
            probe = probe_from(weights[i], biases[i])
            want = saebench.get_effects_per_class_precomputed_acts(sae, probe, key, {}, kind == "scr", 7)
            got = node_effects(means, rows, labels, weights[i], sae.W_dec.detach(), kind == "scr")
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))
            assert (want != 0).sum() >= 10


def saebench_run(tiny, prepared: Prepared, params: ScrTppParams, kind: str, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:  # fmt: skip
    """sae-bench's ``run_eval_single_dataset`` on our prompts: its HF loader is replaced by its own
    ``get_all_llm_activations`` on the same tokenization (BOS in front); everything after is sae-bench's."""
    cfg, sae, env = tiny
    model, tokenizer = get_model(cfg.model)
    with monkeypatch.context() as mp:
        mp.setitem(TPP_CLASSES, gp.DATASET_NAME, TWO_CLASSES)
        run = next(r for r in build_runs(params) if r.kind == kind)

    def activations(*_args) -> tuple[dict, dict]:
        return tuple(
            activation_collection.get_all_llm_activations(
                {c: {"input_ids": tokenize(t, tokenizer, params.context_length, True)} for c, t in split.items()},
                model, 16, cfg.model.layer, cfg.model.hook, mask_bos_pad_eos_tokens=True,
            )  # fmt: skip
            for split in (run.train, run.test)
        )

    config = eval_config(env, params, perform_scr=kind == "scr")  # every probe setting as ours
    config.dataset_names = [SAEBENCH_NAME]
    monkeypatch.setattr(saebench, "get_dataset_activations", activations)
    monkeypatch.setitem(dataset_info.chosen_classes_per_dataset, SAEBENCH_NAME, TWO_CLASSES)
    torch.manual_seed(params.random_seed)
    try:
        raw, clean = quiet(
            saebench.run_eval_single_dataset, SAEBENCH_NAME, config, sae, model, cfg.model.layer, cfg.model.hook,
            "cpu", str(tmp_path), False, run.column1_vals,
        )  # fmt: skip
    finally:
        torch.set_grad_enabled(True)  # sae-bench leaves grad mode off globally
    return raw, clean


@pytest.mark.parametrize("kind", ["scr", "tpp"])
def test_whole_run_matches_saebench(tiny, parity_prep, kind: str, tmp_path: Path, monkeypatch) -> None:
    """Same prompts, model, SAE and seed: the probes' clean accuracies, the accuracies after every
    ablation and SAEBench's metrics agree. Tolerance: accuracies within one test prompt (activations are
    batched differently, so probes and effects agree to ~1e-6, not bit for bit); metrics are then
    recomputed by sae-bench's arithmetic from both sets of accuracies and must agree exactly."""
    _, sae, env = tiny
    prepared, params = parity_prep
    raw, clean = saebench_run(tiny, prepared, params, kind, tmp_path, monkeypatch)
    run = next(r for r in prepared.meta["runs"] if r["kind"] == kind)
    one = 1.0 / (params.test_set_size // 2) + 1e-6

    assert clean.keys() == run["clean_accuracies"].keys()
    for key, acc in clean.items():
        assert abs(run["clean_accuracies"][key] - acc) <= one, (key, acc, run["clean_accuracies"][key])
    data = {f"{kind}_{s}": load_split(prepared, f"{kind}_{s}", sae, params) for s in ("train", "test")}
    ours, _ = score_run(run, prepared, data, sae, params.n_values, params)
    for ablated, by_n in ours.items():
        for n, accs in by_n.items():
            for measured, acc in accs.items():
                assert abs(raw[ablated][n][measured] - acc) <= one, (ablated, n, measured, acc, raw[ablated][n])
    if kind == "scr":
        want = quiet(saebench.get_scr_plotting_dict, raw, clean)
        got = quiet(saebench.get_scr_plotting_dict, ours, run["clean_accuracies"])
    else:
        want = quiet(saebench.create_tpp_plotting_dict, raw, clean)[0]
        got = quiet(saebench.create_tpp_plotting_dict, ours, run["clean_accuracies"])[0]
    assert got.keys() == want.keys()
    output, _ = (evaluate_scr if kind == "scr" else evaluate_tpp)(prepared, sae, env, params)
    details = json.loads(output.to_json())["eval_result_details"][0]
    assert details["dataset_name"] == f"{run['name']}_results"
    assert {k: details[k] for k in got} == pytest.approx(got, abs=1e-9)
    assert all(v is None for k, v in details.items() if k not in got and k != "dataset_name")  # n not asked for


# --- (c) end to end -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def main_prep(tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[Prepared, ScrTppParams]:
    _, _, env = tiny
    params = ScrTppParams(train_set_size=80, test_set_size=40, probe_epochs=100, early_stopping_patience=100)
    return prepare_in_memory(prepare, env, params, tmp_path_factory.mktemp("main")), params


def no_model_env(env: EvalEnv) -> EvalEnv:
    def refuse() -> tuple:
        raise AssertionError("evaluate must not load the model")

    return EvalEnv(env.model_spec, env.prepend_bos, QUIET, env.label, env.run_name, loader=refuse)


def test_prepare_probes_read_the_model_clearly(main_prep) -> None:
    prepared, params = main_prep
    scr, tpp = (next(r for r in prepared.meta["runs"] if r["kind"] == k) for k in ("scr", "tpp"))
    clean = scr["clean_accuracies"]
    assert clean["male / female"] > 0.85 and clean["professor / nurse"] > 0.85  # 0.95 / 1.0 seen
    biased = [clean[f"male_professor / female_nurse probe on {d} data"] for d in ("professor / nurse", "male / female")]
    assert all(0.55 < b < 0.97 for b in biased), biased  # the biased probe reads both attributes, neither fully
    assert scr["n_prompts"]["train"] == {k: params.train_set_size // 2 for k in scr["n_prompts"]["train"]}
    assert tpp["chosen"] == ["0", "1", "2", "6", "9"]
    assert min(tpp["clean_accuracies"].values()) > 0.75, tpp["clean_accuracies"]  # 0.85-1.0 seen
    assert prepared.meta["n_unique_prompts"] == {"scr_train": 120, "scr_test": 60, "tpp_train": 200, "tpp_test": 100}
    assert "FIXTURE" in prepared.meta["data_source"] and "NOT LabHC/bias_in_bios" in prepared.meta["data_source"]


def test_evaluate_writes_saebench_outputs_without_the_model(tiny, main_prep) -> None:
    _, sae, env = tiny
    prepared, params = main_prep
    for evaluate, kind in ((evaluate_scr, "scr"), (evaluate_tpp, "tpp")):
        output, summary = evaluate(prepared, sae, no_model_env(env), params)
        out = json.loads(output.to_json())
        json.dumps(summary)
        assert out["eval_type_id"] == kind and out["eval_config"]["perform_scr"] == (kind == "scr")
        assert out["eval_config"]["dataset_names"] == [gp.DATASET_NAME] and out["eval_config"]["train_set_size"] == 80
        assert out["sae_lens_id"] == "btk-s0" and out["sae_cfg_dict"]["d_sae"] == 256
        extra = out["eval_result_unstructured"]
        assert "FIXTURE" in extra["data_source"] and extra["skipped_n_values"] == [500]  # d_sae 256
        metrics = out["eval_result_metrics"][f"{kind}_metrics"]
        (detail,) = out["eval_result_details"]
        for n in (2, 5, 10, 20, 50, 100):
            if kind == "scr":
                metric = metrics[f"scr_metric_threshold_{n}"]
                assert metric == detail[f"scr_metric_threshold_{n}"]  # one run: the mean is that run
                assert metric in (metrics[f"scr_dir1_threshold_{n}"], metrics[f"scr_dir2_threshold_{n}"])
                assert summary[f"scr_metric_threshold_{n}"] == round(metric, 4)
            else:
                total, intended, unintended = (metrics[f"tpp_threshold_{n}_{m}"] for m in TPP_PARTS)
                assert total == pytest.approx(intended - unintended) and -1 <= total <= 1
                assert summary[f"tpp_threshold_{n}_total_metric"] == round(total, 4)
        assert metrics[f"{kind}_metric_threshold_500" if kind == "scr" else "tpp_threshold_500_total_metric"] is None
        latents = next(iter(extra["runs"].values()))["ablated_latents"]
        for by_n in latents.values():
            assert len(by_n["2"]) <= 2 and set(by_n["2"]) <= set(by_n["10"]) and len(by_n["100"]) > 10
    assert metrics["tpp_threshold_100_intended_diff_only"] > 0.1  # ablating 100 of 256 latents hurts (0.4 seen)


def planted_sae(prepared: Prepared, run_id: str, key: str) -> JumpReLUSAE:
    """d_sae 8: latents 0 and 1 read +u and -u, u the direction separating the probe ``key``'s classes in
    its node-effect set (difference of pooled means), made orthogonal to the mean activation so that
    encode(0) = 0 and ablating them shifts no mean; latents 2-7 never fire. Ablating 0 and 1 removes
    each token's component along u."""
    run = next(r for r in prepared.meta["runs"] if r["id"] == run_id)
    pooled = prepared.tensor(f"{run['kind']}_train_pooled")
    rows, labels = prepared.tensor(f"{run_id}_rows"), prepared.tensor(f"{run_id}_labels")
    a, b = run["sets"][f"effect:{key}"]
    x, y = pooled[rows[a:b]], labels[a:b]
    u = x[y == 1].mean(0) - x[y == 0].mean(0)
    mean = pooled.mean(0) / pooled.mean(0).norm()
    u = u - (u @ mean) * mean
    u = u / u.norm()
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=len(u), d_sae=8))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(len(u), 8, generator=g))
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(8, len(u), generator=g), dim=1))
        sae.W_enc[:, 0], sae.W_enc[:, 1], sae.W_dec[0], sae.W_dec[1] = u, -u, u, -u
        sae.b_enc.copy_(torch.full((8,), -1e4))
        sae.b_enc[:2] = 0.0
        sae.b_dec.zero_()
        sae.threshold.zero_()
    assert not sae.encode(torch.zeros(1, len(u))).any()
    return sae


def test_scr_finds_a_planted_gender_direction_and_blinds_the_biased_probe_to_gender(tiny, main_prep) -> None:
    """Whether the biased probe then gets better at professions depends on where its bias sits, which at
    this size is luck; that it stops reading gender does not."""
    _, _, env = tiny
    prepared, params = main_prep
    output, _ = evaluate_scr(prepared, planted_sae(prepared, "scr0", "male / female"), no_model_env(env),
                                params.model_copy(update={"n_values": [2]}))  # fmt: skip
    run = next(iter(json.loads(output.to_json())["eval_result_unstructured"]["runs"].values()))
    assert run["ablated_latents"]["male / female"]["2"] == [0, 1]
    on_gender = "male_professor / female_nurse probe on male / female data"
    assert run["clean_accuracies"][on_gender] > 0.7
    assert run["ablated_accuracies"]["male / female"]["2"][on_gender] < 0.65  # ~chance (0.525 seen)


def test_tpp_finds_a_planted_class_direction_and_hurts_mostly_that_class(tiny, main_prep) -> None:
    _, _, env = tiny
    prepared, params = main_prep
    output, summary = evaluate_tpp(prepared, planted_sae(prepared, "tpp0", "6"), no_model_env(env),
                                      params.model_copy(update={"n_values": [2]}))  # fmt: skip
    out = json.loads(output.to_json())
    run = out["eval_result_unstructured"]["runs"][f"{gp.DATASET_NAME}_tpp"]
    assert run["ablated_latents"]["6"]["2"] == [0]  # TPP keeps latents more active on the class: +u only
    per_class = out["eval_result_unstructured"]["per_dataset_class_results"][gp.DATASET_NAME]["6"]  # dentist
    assert per_class["tpp_threshold_2_intended_diff_only"] > 0.3, per_class  # 0.5 seen
    assert per_class["tpp_threshold_2_total_metric"] > 0.2, per_class  # 0.37 seen
    total = out["eval_result_metrics"]["tpp_metrics"]["tpp_threshold_2_total_metric"]
    assert summary["tpp_threshold_2_total_metric"] == round(total, 4)
