"""Autointerp (evals/autointerp/): SAEBench's protocol, delphi-style scorers, tiers, the judge over HTTP.

(a) fast, no model: the streamed context sampling against sae-bench's ``get_k_largest_indices`` /
``get_iw_sample_indices`` on the full matrix; prompts, parsers and scores against sae-bench's ``AutoInterp``
methods fed the same recorded judge answers (replay parity); the cache; bad endpoints and keys failing in
one line after bounded retries. (b) slow: the real offline judge server on 127.0.0.1 started and stopped
by the test, a trained tiny SAE end to end, a second run answered from the cache with zero requests, and a
``kill -9`` mid-eval resumed without re-asking what was cached.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from sae_bench.evals.autointerp import main as sb
from sae_bench.evals.autointerp.eval_config import AutoInterpEvalConfig
from sae_bench.sae_bench_utils.indexing_utils import (
    get_iw_sample_indices,
    get_k_largest_indices,
)
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

from evals.autointerp import prompts, scorers, tiers
from evals.autointerp.config import AutointerpConfig
from evals.autointerp.contexts import (
    Window,
    firing_counts,
    gather_contexts,
    sample_latents,
    split_examples,
    top_positions,
)  # fmt: skip
from evals.autointerp.judge_cache import JudgeCache
from evals.autointerp.judge_client import Judge, JudgeError
from evals.contract import Prepared, TensorSink
from tests.conftest import planned_prep_bytes, written_bytes

REPO = Path(__file__).resolve().parents[2]
SMALL = {"n_latents": 4, "buffer": 3, "llm_context_size": 16, "n_top_ex_for_generation": 3,
         "n_iw_sampled_ex_for_generation": 1, "n_top_ex_for_scoring": 1, "n_iw_sampled_ex_for_scoring": 1,
         "n_random_ex_for_scoring": 2, "max_tokens_in_explanation": 16, "tier_window": 2, "n_bootstrap": 50,
         "n_null_shuffles": 20, "judge_concurrency": 2}  # fmt: skip
"""A few latents and short windows: a handful of judge calls of ~300 prompt tokens each."""


# --- (a) fast ------------------------------------------------------------------------------------------


def identity_sae(d: int) -> JumpReLUSAE:
    """Latent i = relu(x_i): the SAE activations are the cached activations themselves."""
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=d))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.zero_(), sae.b_dec.zero_(), sae.threshold.zero_()
    return sae


def synthetic_prepared(folder: Path, n: int = 40, length: int = 24, d: int = 6, seed: int = 0) -> tuple[Prepared, torch.Tensor]:
    """Continuous random activations (no ties), sparse like a latent's, in parts of a few rows."""
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(n, length, d, generator=g).relu() * (torch.rand(n, length, d, generator=g) < 0.3)
    tokens = torch.randint(2, 50, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[:, 0] = False  # BOS
    sink = TensorSink(folder, max_bytes=4096)
    for name, t in (("tokens", tokens), ("mask", mask), ("acts", acts)):
        sink.append(name, t)
    sink.close()
    return Prepared(folder, {"tokens": n * length, "str_tokens": {str(i): f" t{i}" for i in range(60)}}), acts * mask[..., None]


def test_streamed_top_tokens_match_saebench_on_the_full_matrix(tmp_path: Path) -> None:
    prepared, acts = synthetic_prepared(tmp_path)
    sae = identity_sae(acts.shape[-1])
    for no_overlap in (True, False):
        p = AutointerpConfig(**{**SMALL, "llm_context_size": 24}, no_overlap=no_overlap, sae_batch_size=7)
        latents = [0, 3, 5]
        rows, cols, values = top_positions(prepared, sae, latents, p)
        for j, latent in enumerate(latents):
            ref = get_k_largest_indices(acts[..., latent], k=p.n_top_ex, buffer=p.buffer, no_overlap=no_overlap)
            assert sorted(zip(rows[:, j].tolist(), cols[:, j].tolist())) == sorted(map(tuple, ref.tolist()))
            assert values[:, j].tolist() == pytest.approx(acts[..., latent][ref[:, 0], ref[:, 1]].tolist())


def test_streamed_importance_sample_follows_saebench_distribution(tmp_path: Path) -> None:
    """Inclusion frequencies of the weighted reservoir vs ``get_iw_sample_indices`` (multinomial without
    replacement) over many seeds, on one latent with few candidate tokens."""
    prepared, acts = synthetic_prepared(tmp_path, n=6, length=12, d=2, seed=3)
    sae = identity_sae(2)
    p = AutointerpConfig(**{**SMALL, "llm_context_size": 12, "n_top_ex_for_generation": 1, "n_top_ex_for_scoring": 0,
                            "n_random_ex_for_scoring": 1, "sae_batch_size": 4})  # fmt: skip
    _, _, values = top_positions(prepared, sae, [0], p)
    x = acts[..., 0].clone()
    x = torch.where(x >= values.min(), 0.0, x)
    ours: dict[tuple[int, int], int] = {}
    theirs: dict[tuple[int, int], int] = {}
    runs = 300
    for seed in range(runs):
        ctx = gather_contexts(prepared, sae, [0], p.model_copy(update={"random_seed": seed}))[0]
        for w in ctx.iw:
            ours[(w.row, w.col)] = ours.get((w.row, w.col), 0) + 1
        torch.manual_seed(seed)
        for r, c in get_iw_sample_indices(x, k=p.n_iw_sampled_ex, buffer=p.buffer).tolist():
            theirs[(r, c)] = theirs.get((r, c), 0) + 1
    assert set(ours) <= set(theirs) | {k for k in ours if x[k] > 0}
    for key in set(ours) | set(theirs):
        assert abs(ours.get(key, 0) - theirs.get(key, 0)) / runs < 0.12, key
    assert all(x[k] > 0 for k in ours)  # never a token at or above the weakest top one


def test_latent_sample_is_saebench_random_sample_of_alive(tmp_path: Path) -> None:
    prepared, acts = synthetic_prepared(tmp_path, d=12)
    p = AutointerpConfig(**SMALL, dead_latent_threshold=30)
    counts, n_unmasked = firing_counts(prepared, identity_sae(12), p)
    assert counts.tolist() == (acts > 0).sum(dim=(0, 1)).tolist() and n_unmasked == 40 * 23
    sparsity = counts / n_unmasked
    alive = torch.nonzero(sparsity * 960 > 30).squeeze(1).tolist()
    random.seed(p.random_seed)
    expected = random.sample(alive, k=4)
    assert sample_latents(counts, n_unmasked, 960, p) == expected


class StrModel:
    """sae-bench's ``Example`` asks its model for ``to_str_tokens``; this is our per-token string table."""

    def __init__(self, table: dict[str, str]):
        self.table = table

    def to_str_tokens(self, toks: torch.Tensor) -> list[str]:
        return [self.table[str(t)] for t in toks.tolist()]


def saebench_autointerp(p: AutointerpConfig) -> sb.AutoInterp:
    """sae-bench's ``AutoInterp`` with its config, for its prompt, parse and score methods (no model needed)."""
    obj = sb.AutoInterp.__new__(sb.AutoInterp)
    obj.cfg = AutoInterpEvalConfig(
        n_latents=p.n_latents, buffer=p.buffer, n_top_ex_for_generation=p.n_top_ex_for_generation,
        n_iw_sampled_ex_for_generation=p.n_iw_sampled_ex_for_generation, n_top_ex_for_scoring=p.n_top_ex_for_scoring,
        n_random_ex_for_scoring=p.n_random_ex_for_scoring, n_iw_sampled_ex_for_scoring=p.n_iw_sampled_ex_for_scoring,
        use_demos_in_explanation=p.use_demos_in_explanation,
    )  # fmt: skip
    return obj


RECORDED = [
    ("This neuron activates on the word 'movie' in reviews.", "1, 3"),
    ("This neuron activates on punctuation", "None"),
    ("the neuron activates on names", "2 and 4."),
    ("It activates on adjectives", "1, two, 3"),
]
"""(explanation answer, scoring answer) pairs as judges gave them, the last one unparsable."""


def test_replay_recorded_answers_through_saebench_and_ours_gives_the_same_scores(tmp_path: Path) -> None:
    prepared, _ = synthetic_prepared(tmp_path)
    table = prepared.meta["str_tokens"] | {"3": "\n", "4": "�x"}
    model = StrModel(table)
    for demos in (True, False):
        p = AutointerpConfig(**{**SMALL, "llm_context_size": 24}, use_demos_in_explanation=demos)
        ref = saebench_autointerp(p)
        contexts = gather_contexts(prepared, identity_sae(6), [0, 1, 2, 4], p)
        assert len(contexts) == 4
        for ctx, (explain_raw, score_raw) in zip(contexts.values(), RECORDED):
            generation, scoring = split_examples(ctx, p)
            thr = ctx.act_threshold

            def examples(ws: list[Window], keep_order: bool, thr: float = thr) -> sb.Examples:
                made = [sb.Example(w.tokens, [0.0] * len(w.acts) if keep_order and w.kind == "random" else w.acts,
                                   thr, model) for w in ws]  # fmt: skip
                ex = sb.Examples(made)  # sorted by peak activation, as sae-bench's generation examples
                if keep_order:  # scoring: sae-bench shuffles with the global RNG; we use our seeded order
                    ex.examples = made
                return ex

            gen_ex, score_ex = examples(generation, False), examples(scoring, True)
            assert prompts.saebench_explain(generation, thr, table, p) == ref.get_generation_prompts(gen_ex)
            explanation = prompts.parse_explanation(explain_raw)
            assert explanation == ref.parse_explanation(explain_raw)
            random.seed(7)  # sae-bench draws the example answer from the global RNG; ours from its argument
            assert prompts.saebench_score(explanation, scoring, table, p, random.Random(7)) == ref.get_scoring_prompts(
                explanation, score_ex)
            predictions = prompts.parse_saebench_predictions(score_raw)
            assert predictions == ref.parse_predictions(score_raw)
            if predictions is not None:
                is_active = [w.kind != "random" and any(prompts.active(w, thr)) for w in scoring]
                assert [e.is_active for e in score_ex] == is_active
                assert scorers.saebench_accuracy(predictions, is_active) == ref.score_predictions(predictions, score_ex)


def test_parsers_scores_and_spread() -> None:
    assert prompts.parse_binary_list("Sure: [1, 0, 1]", 3) == [1, 0, 1]
    assert prompts.parse_binary_list("1 0 1 1 1 0", 3) == [1, 0, 1] and prompts.parse_binary_list("1, 0, 1", 3) == [1, 0, 1]
    assert prompts.parse_binary_list("[1, 0] then [0, 0, 1]", 3) is None and prompts.parse_binary_list("[1, 2, 0]", 3) is None
    assert prompts.parse_binary_list("The answer is 1", 1) is None
    assert scorers.balanced_accuracy([1, 1, 1, 1], [1, 0, 0, 0]) == 0.5
    assert scorers.balanced_accuracy([1, 0, 0, 0], [1, 0, 0, 0]) == 1.0
    assert scorers.auroc([0.9, 0.1, 0.5], [1, 0, 0]) == 1.0 and scorers.auroc([0.5, 0.5], [1, 0]) == 0.5
    null = scorers.shuffled_null([1, 0, 0, 0], [1, 0, 0, 0], 400, random.Random(0))
    assert 0.35 < null < 0.65  # chance level for a perfect answer pattern
    s = scorers.spread([0.2, 0.4, 0.6, float("nan")], 200, 0)
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.4) and s["ci95_low"] <= 0.4 <= s["ci95_high"]


def test_tiers_classify_from_window_consistency() -> None:
    w = lambda toks: Window(0, 3, toks, [0.0] * 7, "top")
    text = {1: " the", 2: " movie", 3: " was", 4: " great", 5: " cat", 6: " physics", 7: " seven", 8: " Paris",
            9: " blue", 10: " quickly"} | {i: f" w{i}" for i in range(11, 20)}  # fmt: skip
    embed_calls: list[list[str]] = []

    def embed(texts: list[str]) -> torch.Tensor:
        embed_calls.append(texts)
        vocab = sorted(set(" ".join(texts).split()))
        rows = torch.tensor([[float(v in t.split()) for v in vocab] for t in texts]) + 1e-6
        return rows / rows.norm(dim=1, keepdim=True)

    def as_text(ids: list[int]) -> str:
        return "".join(text[i] for i in ids)

    same_before = [w([5, 2, 3, 4, 11 + 2 * i, 12 + 2 * i, 1]) for i in range(4)]  # before: " movie was", after: all differ
    rand = [w([i % 10 + 1, (i + 3) % 10 + 1, (i + 5) % 10 + 1, (i + 7) % 10 + 1, (i + 2) % 10 + 1, (i + 4) % 10 + 1,
               (i + 9) % 10 + 1]) for i in range(10)]  # fmt: skip
    base = tiers.correlation(rand, 2, as_text, embed)
    score = tiers.correlation(same_before, 2, as_text, embed)
    assert tiers.tier(score, base, 0.1) == "input"
    assert tiers.tier({"before": 0.1, "around": 0.1, "after": 0.9}, {k: 0.1 for k in tiers.KINDS}, 0.1) == "output"
    assert tiers.tier({"before": 0.9, "around": 0.9, "after": 0.9}, {k: 0.1 for k in tiers.KINDS}, 0.1) == "cross"
    assert tiers.tier({k: 0.15 for k in tiers.KINDS}, {k: 0.1 for k in tiers.KINDS}, 0.1) == "obscure"
    assert tiers.tier_mix({1: "input", 2: "input", 3: "obscure", 4: "cross"}) == {
        "input": 0.5, "output": 0.0, "cross": 0.25, "obscure": 0.25}


def test_cache_survives_and_keys_on_sampling_settings(tmp_path: Path) -> None:
    cache = JudgeCache(tmp_path)
    cache.put("ab" + "0" * 62, {"content": "x", "usage": {}})
    assert cache.get("ab" + "0" * 62)["content"] == "x" and cache.get("cd" + "0" * 62) is None and len(cache) == 1
    assert not list(tmp_path.glob("*/.*.tmp"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MESSAGES = [{"role": "user", "content": "hello"}]


def test_unreachable_endpoint_fails_in_one_line_after_bounded_retries(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SAEPIPE_TEST_KEY", "k")
    p = AutointerpConfig(judge_backend="openai", judge_base_url=f"http://127.0.0.1:{free_port()}/v1",
                         judge_api_key_env="SAEPIPE_TEST_KEY", judge_max_retries=2, judge_timeout_s=2)  # fmt: skip
    started = time.perf_counter()
    with Judge(p, JudgeCache(tmp_path)) as judge, pytest.raises(JudgeError) as err:
        judge.ask(MESSAGES, 5)
    msg = str(err.value)
    assert "\n" not in msg and "judge_base_url" in msg and "failed 3 times" in msg and "APIConnectionError" in msg
    assert 2.5 < time.perf_counter() - started < 30  # backoff 1 s + 2 s, then gives up


def test_missing_key_names_the_variable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SAEPIPE_NO_SUCH_KEY", raising=False)
    p = AutointerpConfig(judge_backend="openai", judge_base_url="http://127.0.0.1:9/v1", judge_api_key_env="SAEPIPE_NO_SUCH_KEY")
    with Judge(p, JudgeCache(tmp_path)) as judge, pytest.raises(JudgeError, match=r"\$SAEPIPE_NO_SUCH_KEY"):
        judge.ask(MESSAGES, 5)


def test_config_rejects_windows_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="tier_window"):
        AutointerpConfig(buffer=2, tier_window=3)
    with pytest.raises(ValueError, match=r"llm_context_size \(16\) must exceed 2 \* buffer \(20\)"):
        AutointerpConfig(enabled=True, llm_context_size=16)
    # eval_prep validates only the fields prepare reads (plan.py's prep params): short contexts must pass there,
    # since the section's own buffer was checked when it was loaded
    assert AutointerpConfig.model_validate({"total_tokens": 4096, "llm_context_size": 16, "llm_batch_size": 32}).buffer == 10
    with pytest.raises(ValueError, match="extra"):
        AutointerpConfig(n_latent=3)
    assert AutointerpConfig().n_ex_for_scoring == AutoInterpEvalConfig().n_ex_for_scoring == 14


# --- (b) slow: the real offline judge over HTTP, a trained tiny SAE ---------------------------------------

E2E = {**SMALL, "n_latents": 2, "total_tokens": 2048, "scorers": ["detection", "embedding"], "format_retries": 0,
       "max_unparsable_frac": 1.0, "act_threshold_frac": 0.5}  # fmt: skip
"""Two latents, SAEBench's detection and one delphi judge scorer: 6 judge calls a run. The tiny SAE's latents
fire on 40-65% of tokens: at 1% of the top activation every window is active and no negative exists."""


SERVER_KEY = "local"
"""The test server requires a key, as an external endpoint does; the local backend sends this one."""


@pytest.fixture(scope="module")
def judge_server():
    from evals.autointerp.judge_server import LocalJudgeServer

    with LocalJudgeServer(api_key=SERVER_KEY) as server:
        yield server


def server_stats(server) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/saepipe/stats", timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def tiny_prepared(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    from evals.autointerp.prepare import prepare
    from evals.contract import EvalEnv, prepare_in_memory

    cfg, _, _ = tiny_run
    folder = tmp_path_factory.mktemp("autointerp_prep")
    env = EvalEnv(model_spec=cfg.model, prepend_bos=cfg.data.prepend_bos, data=cfg.data)
    prepared = prepare_in_memory(prepare, env, AutointerpConfig(**E2E), folder, max_bytes=2**16)
    (folder / "meta.json").write_text(json.dumps(prepared.meta))
    return prepared


@pytest.fixture(scope="module")
def tiny_sae_path(tiny_run) -> Path:
    _, store, train = tiny_run
    return store.path("train", train.key) / "sae"


def no_model_env(cfg):
    from evals.contract import EvalEnv

    def refuse() -> tuple:
        raise AssertionError("evaluate loaded the model")

    return EvalEnv(model_spec=cfg.model, prepend_bos=cfg.data.prepend_bos, label="btk-s0", run_name="tiny", loader=refuse)


def test_prepare_caches_held_out_contexts_and_activations(tiny_prepared: Prepared) -> None:
    meta = tiny_prepared.meta
    assert meta["contexts"] == 2048 // 16 and meta["tokens"] == 2048 and "held-out" in meta["dataset"]
    assert set(tiny_prepared.names()) == {"tokens", "mask", "acts"}
    tokens, mask = tiny_prepared.tensor("tokens"), tiny_prepared.tensor("mask")
    assert tokens.shape == mask.shape == (128, 16) and tiny_prepared.tensor("acts").shape == (128, 16, 576)
    assert not mask[:, 0].any() and mask.float().mean() > 0.8  # BOS first, masked like sae-bench
    assert set(meta["str_tokens"]) == {str(t) for t in tokens.unique().tolist()}
    assert len(list((tiny_prepared.root / "acts").glob("part-*"))) > 1  # chunked, not one file


def test_plan_size_bounds_what_prep_writes(tiny_run, tiny_prepared: Prepared) -> None:
    """The disk preflight's size of this prep against the bytes it wrote."""
    from evals.autointerp import EVAL

    real = written_bytes(tiny_prepared.root)
    est = planned_prep_bytes(EVAL, AutointerpConfig(**E2E), tiny_run[0].model, None)
    assert real <= est <= 1.2 * real, (real, est)


def test_end_to_end_over_http_then_a_rerun_sends_zero_requests(tiny_run, tiny_prepared, tiny_sae_path, judge_server,
                                                                tmp_path: Path) -> None:  # fmt: skip
    from sae_bench.evals.autointerp.eval_output import AutoInterpEvalOutput
    from sae_lens import SAE

    from evals.autointerp.evaluate import evaluate

    cfg, _, _ = tiny_run
    p = AutointerpConfig(**E2E, judge_base_url=judge_server.base_url)
    os.environ["SAEPIPE_JUDGE_CACHE"] = str(tmp_path / "judge")
    sae = SAE.load_from_disk(str(tiny_sae_path))
    before = server_stats(judge_server)["requests"]
    output, summary = evaluate(tiny_prepared, sae, no_model_env(cfg), p)
    sent = server_stats(judge_server)["requests"] - before
    assert isinstance(output, AutoInterpEvalOutput)
    data = json.loads(output.to_json())
    assert data["eval_type_id"] == "autointerp" and data["eval_config"]["n_latents"] == 2
    latents = {k: v for k, v in data["eval_result_unstructured"].items() if k != "saepipe"}
    assert len(latents) == 2
    for record in latents.values():
        assert isinstance(record["explanation"], str) and record["explanation"]
        assert record["score"] is None or 0.0 <= record["score"] <= 1.0
        assert record["detection"] is None or 0.0 <= record["detection"] <= 1.0
        assert record["n_negatives"] > 0
        assert 0.0 <= record["embedding"] <= 1.0 and 0.0 <= record["embedding_null"] <= 1.0
        assert record["tier"] in tiers.TIERS and set(record["correlation"]) == set(tiers.KINDS)
    s = data["eval_result_unstructured"]["saepipe"]
    assert "135M" in s["judge_note"] and sum(s["tier_mix"].values()) == pytest.approx(1.0)
    examples = [ex for tier in s["tier_examples"].values() for ex in tier]
    assert sorted(ex["latent"] for ex in examples) == sorted(int(k) for k in latents)  # 2 per tier: both sampled latents
    for c in (c for ex in examples for c in ex["top_contexts"]):  # tokens and activations, the window's peak at its centre
        assert len(c["tokens"]) == len(c["acts"]) == 2 * p.buffer + 1 and all(isinstance(t, str) for t in c["tokens"])
        assert c["acts"][p.buffer] == max(c["acts"]) > 0
    assert s["judge"]["requests"] == sent == summary["judge_requests"] > 0 and s["judge"]["cost_usd"] == 0.0
    assert s["judge"]["prompt_tokens"] > 100 * sent
    assert 0.0 <= summary["embedding"] <= 1.0 and set(summary) >= {"tier_input_frac", "judge_tokens", "embedding_null"}
    # the second run: every answer from the cache, nothing sent, the same result
    again, summary_again = evaluate(tiny_prepared, sae, no_model_env(cfg), p)
    assert server_stats(judge_server)["requests"] - before == sent
    assert summary_again["judge_requests"] == 0 and summary_again["judge_cache_hits"] == sent
    redo = json.loads(again.to_json())["eval_result_unstructured"]
    assert {k: v["explanation"] for k, v in redo.items() if k != "saepipe"} == {k: v["explanation"] for k, v in latents.items()}
    summary.pop("seconds"), summary_again.pop("seconds")
    for key in ("judge_requests", "judge_cache_hits"):
        summary.pop(key), summary_again.pop(key)
    assert summary_again == summary


KILLED_RUN = """
import json, sys
from pathlib import Path
from sae_lens import SAE
from evals.autointerp.config import AutointerpConfig
from evals.autointerp.evaluate import evaluate
from evals.contract import EvalEnv, Prepared
from pipeline.config import ModelSpec
folder, sae_path, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
prepared = Prepared(Path(folder), json.loads((Path(folder) / "meta.json").read_text()))
env = EvalEnv(model_spec=ModelSpec.model_validate(json.loads(sys.argv[4])), prepend_bos=True, label="killed")
evaluate(prepared, SAE.load_from_disk(sae_path), env, AutointerpConfig(**params))
"""


def test_kill_9_mid_eval_resumes_without_re_asking_cached_prompts(tiny_run, tiny_prepared, tiny_sae_path,
                                                                  judge_server, tmp_path: Path) -> None:  # fmt: skip
    from sae_lens import SAE

    from evals.autointerp.evaluate import evaluate

    cfg, _, _ = tiny_run
    params = {**E2E, "random_seed": 7, "scorers": ["embedding"], "judge_base_url": judge_server.base_url}  # 4 judge calls
    cache = JudgeCache(tmp_path / "judge")
    env = {**os.environ, "SAEPIPE_JUDGE_CACHE": str(cache.folder), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tiny_prepared.root), str(tiny_sae_path), json.dumps(params),
                             cfg.model.model_dump_json()], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while len(cache) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read()[-500:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cached = {digest(json.loads(f.read_text())["request"]["messages"]) for f in cache.folder.glob("*/*.json")}
    assert len(cached) >= 2 and not list(cache.folder.glob("*/.*.tmp"))  # whole answers only
    before = server_stats(judge_server)
    os.environ["SAEPIPE_JUDGE_CACHE"] = str(cache.folder)
    _, summary = evaluate(tiny_prepared, SAE.load_from_disk(str(tiny_sae_path)), no_model_env(cfg), AutointerpConfig(**params))
    asked = server_stats(judge_server)["prompt_digests"][len(before["prompt_digests"]) :]
    assert not set(asked) & cached  # nothing answered before the kill was asked again
    # (the server may still finish the killed run's request in flight: count this run's asks on the client side)
    assert summary["judge_cache_hits"] == len(cached) and summary["judge_requests"] == len(cache) - len(cached) > 0


def test_endpoint_from_the_environment_then_wrong_key_model_or_url_fail_in_one_line_keeping_the_cache(
    judge_server, tmp_path: Path, monkeypatch
) -> None:
    """Backend (a): the offline server stands in for an external endpoint, configured only through the
    environment as gemma2b_l12.yaml is (judge_backend: openai, no URL, model or key in the config)."""
    from evals.autointerp.judge_server import MODEL_NAME

    monkeypatch.setenv("SAEPIPE_JUDGE_BASE_URL", judge_server.base_url)
    monkeypatch.setenv("SAEPIPE_JUDGE_MODEL", MODEL_NAME)
    monkeypatch.setenv("OPENAI_API_KEY", SERVER_KEY)
    p = AutointerpConfig(judge_backend="openai", judge_max_retries=1, judge_timeout_s=120)
    cache = JudgeCache(tmp_path / "judge")
    other = [{"role": "user", "content": "goodbye"}]
    with Judge(p, cache) as judge:
        answer = judge.ask(MESSAGES, 5)
        report = judge.report()
    assert answer and report["requests"] == 1 and report["base_url"] == judge_server.base_url and report["model"] == MODEL_NAME
    assert report["prompt_tokens"] > 0 and report["cost_usd"] > 0  # priced at gpt-4o-mini's list price: a remote judge
    sent = server_stats(judge_server)["requests"]

    def failure(name: str, value: str, cached: bool = True) -> str:
        """The error of a new prompt with one setting wrong; first, when the request is the same, the cached
        answer is still served without the network."""
        monkeypatch.setenv(name, value)
        with Judge(p, cache) as judge:
            if cached:
                assert judge.ask(MESSAGES, 5) == answer
            with pytest.raises(JudgeError) as err:
                judge.ask(other, 5)
            assert judge.usage.cache_hits == int(cached) and judge.usage.requests == 0
        return str(err.value)

    wrong_key = failure("OPENAI_API_KEY", "sk-wrong")
    assert "\n" not in wrong_key and "$OPENAI_API_KEY" in wrong_key and "judge_api_key_env" in wrong_key and "401" in wrong_key
    monkeypatch.setenv("OPENAI_API_KEY", SERVER_KEY)
    wrong_model = failure("SAEPIPE_JUDGE_MODEL", "gpt-4o-mini", cached=False)  # another model: another request
    assert "\n" not in wrong_model and "$SAEPIPE_JUDGE_MODEL" in wrong_model and "judge_model" in wrong_model and "404" in wrong_model
    assert server_stats(judge_server)["requests"] == sent  # refused before any generation
    monkeypatch.setenv("SAEPIPE_JUDGE_MODEL", MODEL_NAME)
    started = time.perf_counter()
    unreachable = failure("SAEPIPE_JUDGE_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    assert "\n" not in unreachable and "failed 2 times" in unreachable and "$SAEPIPE_JUDGE_BASE_URL" in unreachable
    assert 1.0 <= time.perf_counter() - started < 30  # one retry after 1 s of backoff, then it gives up
    assert len(cache) == 1  # the one good answer, kept through every failure


def digest(messages: list[dict]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(messages).encode()).hexdigest()


@pytest.mark.slow
def test_local_server_exits_when_its_stage_is_killed() -> None:
    """The stage's server (a child on a loopback port) must not outlive a kill -9 of the stage."""
    code = ("import time; from evals.autointerp.judge_server import LocalJudgeServer; s = LocalJudgeServer().__enter__(); "
            "print(s.proc.pid, s.port, flush=True); time.sleep(600)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    server_pid, port = map(int, proc.stdout.readline().split())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as r:
        assert json.loads(r.read())["data"][0]["id"] == "SmolLM2-135M-Instruct"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{server_pid}/stat")
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":  # gone, or a zombie nobody reaped
            return
        time.sleep(0.2)
    os.kill(server_pid, signal.SIGKILL)
    pytest.fail("the judge server outlived its parent")
