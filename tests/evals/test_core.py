"""Eval `core`: our split (prep's model passes once, the SAE and the model's tail per SAE) against
sae-bench's own ``run_evals`` (the whole model per SAE) on the same model, SAE and tokens.

Tolerance: 1e-5 relative on every metric and every per-latent value. On CPU both sides run the same
float operations on the same tensors (the tail starts from the very activations the full pass feeds
its next block), except KL: ours is sum p log p (cached by prep) minus sum p log q, sae-bench's
sum p (log p - log q). Per position the two differ at float rounding (1e-6 of a KL near 7 seen, each
side as far from a float64 reference as the other); the reported means agree to the last fp32 digit,
so the measured differences are 0. The tolerance leaves room for kernels that pick a different
summation order for a different batch shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from sae_bench.sae_bench_utils.general_utils import load_and_format_sae

from evals.contract import EvalEnv, prepare_in_memory
from evals.core import EVAL as CORE
from evals.core import prepare as core_prep
from evals.core.evaluate import evaluate
from evals.core.measures import clean_side, kl, next_token_ce, special_mask
from evals.core.prepare import (
    ACTS,
    CE_ABLATED,
    CE_CLEAN,
    CLEAN_PROBS,
    KL_ABLATED,
    RESID,
    TOKENS,
    heldout_tokens,
)
from evals.core.reference import saebench_core
from evals.core.tail import Tail
from pipeline.data.contexts import token_contexts
from pipeline.data.corpora import documents
from pipeline.data.reused import Reused
from pipeline.models.cache import get_model
from pipeline.progress import Reporter
from pipeline.recipes.as_trained import load_as_trained
from tests.conftest import planned_prep_bytes, written_bytes

RTOL = 1e-5
QUIET = Reporter(enabled=False)


def leaves(tree: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON tree, keyed by its path (lists index by position)."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in leaves(sub, f"{prefix}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in leaves(sub, f"{prefix}[{i}]").items()}
    return {prefix: float(tree)} if isinstance(tree, int | float) and not isinstance(tree, bool) else {}


def rel_diff(a: float, b: float) -> float:
    return 0.0 if a == b else abs(a - b) / max(abs(a), abs(b), 1e-12)


def results(output: Any) -> dict[str, float]:
    raw = json.loads(output.to_json())
    return leaves({"metrics": raw["eval_result_metrics"], "details": raw["eval_result_details"]})


def core_setup(tiny_run, hook: str, clean_logits_max_mib: int, folder: Path, **settings: Any) -> tuple:
    cfg, store, train = tiny_run
    spec = cfg.model.model_copy(update={"hook": hook})
    sae = load_as_trained(store.path("train", train.key) / "sae", spec.device)
    sae.cfg.metadata.hook_name = hook  # the same SAE read at another hook: both sides splice it there
    sae = load_and_format_sae(cfg.name, sae, spec.device)[1]
    env = EvalEnv(spec, cfg.data.prepend_bos, QUIET, "btk-s0", cfg.name, data=cfg.data)
    p = cfg.evals.core.model_copy(update={"clean_logits_max_mib": clean_logits_max_mib, **settings})
    prepared = prepare_in_memory(core_prep.prepare, env, p, folder)
    return sae, env, p, prepared


@pytest.fixture(scope="module")
def stored(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """resid_post (the tail starts at the next block from the hook's activations), clean logits stored."""
    return core_setup(tiny_run, tiny_run[0].model.hook, 1024, tmp_path_factory.mktemp("core_stored"))


def assert_parity(sae, env, p, prepared) -> dict[str, float]:
    ours, summary = evaluate(prepared, sae, env, p)
    ref = saebench_core(prepared, sae, env, p)
    a, b = results(ours), results(ref)
    assert a.keys() == b.keys() and len(a) > 7 * sae.cfg.d_sae  # 7 values per latent
    worst = {k: rel_diff(a[k], b[k]) for k in a}
    bad = {k: (a[k], b[k]) for k, d in worst.items() if d > RTOL}
    assert not bad, f"{len(bad)} values differ beyond {RTOL}: {dict(list(bad.items())[:10])}"
    assert summary["ce_loss_score"] == ours.eval_result_metrics.model_performance_preservation.ce_loss_score
    return worst


def test_matches_saebench_run_evals(stored) -> None:
    sae, env, p, prepared = stored
    assert CLEAN_PROBS in prepared.names() and RESID not in prepared.names()
    worst = assert_parity(sae, env, p, prepared)
    print("max relative difference:", max(worst.values()))


def test_tail_starts_where_the_hook_allows() -> None:
    assert Tail.of("blocks.3.hook_resid_post", 30) == Tail(4, "blocks.4.hook_resid_pre", "blocks.4.hook_resid_pre")
    assert Tail.of("blocks.3.hook_resid_pre", 30) == Tail(3, "blocks.3.hook_resid_pre", "blocks.3.hook_resid_pre")
    assert Tail.of("blocks.3.hook_resid_mid", 30) == Tail(3, "blocks.3.hook_resid_pre", "blocks.3.hook_resid_mid")
    assert Tail.of("blocks.29.hook_resid_post", 30) == Tail(29, "blocks.29.hook_resid_pre", "blocks.29.hook_resid_post")
    with pytest.raises(ValueError, match="cannot splice"):
        Tail.of("blocks.3.attn.hook_z", 30)


def test_tail_logits_are_the_full_forward_logits_bit_for_bit(tiny_run) -> None:
    """The tail's own unembedding (``tail.unembed``: ``addmm`` into a reused tensor) gives the bits
    TransformerLens's full forward gives, on every batch that reuses the tensor."""
    cfg = tiny_run[0]
    model, _ = get_model(cfg.model)
    tail = Tail.of(cfg.model.hook, model.cfg.n_layers)
    reused = Reused()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _ in range(2):
            tokens = torch.randint(0, model.cfg.d_vocab, (2, 24), generator=gen)
            full, cache = model.run_with_cache(tokens, names_filter=[tail.start_hook])
            got, _ = tail.logits(model, cache[tail.start_hook], tokens, reused=reused)
            assert got.data_ptr() == reused.get("logits", got.shape, got).data_ptr() and torch.equal(got, full)


def test_matches_saebench_where_the_tail_starts_below_the_hook(tiny_run, tmp_path: Path) -> None:
    """resid_mid: the tail reruns the hooked block from its cached resid_pre (as for the last block's
    resid_post); and with no room for the clean logits, the clean tail is rerun per SAE."""
    sae, env, p, prepared = core_setup(tiny_run, "blocks.3.hook_resid_mid", 0, tmp_path)
    assert RESID in prepared.names() and CLEAN_PROBS not in prepared.names()
    assert_parity(sae, env, p, prepared)


def test_context_size_setting_sets_the_held_out_contexts(tiny_run, tmp_path: Path) -> None:
    """`evals.core.context_size` (SAEBench's, 128 there) overrides the run's, in the prep and the output."""
    sae, env, p, prepared = core_setup(tiny_run, tiny_run[0].model.hook, 1024, tmp_path, context_size=16)
    assert env.data.context_size != 16 and prepared.meta["context_size"] == 16
    assert prepared.tensor(TOKENS).shape == (p.n_contexts, 16)
    output, _ = evaluate(prepared, sae, env, p)
    assert output.eval_config.context_size == 16


def test_numbers_are_plausible(stored) -> None:
    sae, env, p, prepared = stored
    output, _ = evaluate(prepared, sae, env, p)
    m = output.eval_result_metrics
    assert 0 < m.model_performance_preservation.ce_loss_score <= 1
    assert m.model_performance_preservation.ce_loss_with_ablation > m.model_performance_preservation.ce_loss_with_sae
    assert m.model_performance_preservation.ce_loss_with_sae > m.model_performance_preservation.ce_loss_without_sae
    assert 0 < m.model_behavior_preservation.kl_div_with_sae < m.model_behavior_preservation.kl_div_with_ablation
    assert 0 < m.reconstruction_quality.explained_variance < 1 and 0 < m.sparsity.l0 <= sae.cfg.d_sae
    assert prepared.tensor(CE_ABLATED).mean() > prepared.tensor(CE_CLEAN).mean()


def test_prep_stores_what_the_passes_read(stored) -> None:
    sae, env, p, prepared = stored
    tokens = prepared.tensor(TOKENS)
    assert tokens.shape == (p.n_contexts, env.data.context_size)
    assert prepared.reader(ACTS).shape == (p.n_contexts, env.data.context_size, sae.cfg.d_in)
    model, _ = get_model(env.model_spec)
    assert prepared.reader(CLEAN_PROBS).shape == (p.n_reconstruction_contexts, env.data.context_size, model.cfg.d_vocab)
    counted = special_mask(tokens[: p.n_reconstruction_contexts], prepared.meta["ignore_tokens"])
    assert len(prepared.tensor(CE_CLEAN)) == counted[:, :-1].sum() and len(prepared.tensor(KL_ABLATED)) == counted.sum()
    assert not counted[:, 0].any()  # BOS opens every context and is left out, as in training


def test_plan_size_bounds_what_prep_writes(stored) -> None:
    """The disk preflight's size of this prep (clean logits stored) against the bytes it wrote."""
    sae, env, p, prepared = stored
    real, est = written_bytes(prepared.root), planned_prep_bytes(CORE, p, env.model_spec, env.data.context_size)
    assert real <= est <= 1.1 * real, (real, est)


def test_heldout_documents_are_disjoint_from_training_documents(tiny_run) -> None:
    """The shipped Rotten Tomatoes corpus holds 9 texts twice: the split goes by text, so both copies
    land on one side (a split by position put 9 held-out documents into training too)."""
    cfg, _, _ = tiny_run
    held, trained = set(documents(cfg.data, heldout=True)), set(documents(cfg.data, heldout=False))
    assert held and trained and not held & trained


def test_core_reads_no_training_context(tiny_run) -> None:
    """The contexts the eval reads never occur among the training split's contexts (checked on as many)."""
    cfg, _, _ = tiny_run
    _, tokenizer = get_model(cfg.model)
    p = cfg.evals.core
    env = EvalEnv(cfg.model, cfg.data.prepend_bos, QUIET, data=cfg.data)
    read = {tuple(r) for r in heldout_tokens(env, p, tokenizer).tolist()}
    training = token_contexts(documents(cfg.data, heldout=False), tokenizer, cfg.data.context_size, cfg.data.prepend_bos)
    assert not read & {tuple(next(training)) for _ in range(2000)}


@pytest.mark.parametrize("padded", [False, True])
def test_ce_from_the_shared_log_softmax_is_transformer_lens_ce_bit_for_bit(padded: bool) -> None:
    """``next_token_ce`` on the log-softmax KL also reads equals TransformerLens's per-token CE exactly,
    with and without padding in the attention mask."""
    from transformer_lens.utilities.lm_utils import lm_cross_entropy_loss

    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 12, 5_000, generator=gen) * 4
    tokens = torch.randint(0, 5_000, (3, 12), generator=gen)
    mask = torch.ones(3, 12, dtype=torch.long)
    if padded:
        mask[1, 9:] = 0
        mask[2, 4:] = 0
    want = lm_cross_entropy_loss(logits, tokens, mask if padded else None, per_token=True)
    got = next_token_ce(torch.log_softmax(logits, -1), tokens, mask if padded else None)
    assert torch.equal(got, want) and (got > 0).sum() == 3 * 11 - (3 + 8 if padded else 0)  # padding: CE 0


def test_kl_with_the_clean_side_cached_equals_saebench_form() -> None:
    """``measures.kl`` (sum p log p cached, minus sum p log q) and sae-bench's p (log p - log q), both
    against float64, on logits spread wide enough (a vocabulary of 49,152) that some clean probabilities
    underflow to 0: there sae-bench's form gives NaN (0 * log 0) and xlogy keeps ours finite."""
    gen = torch.Generator().manual_seed(0)
    clean = torch.randn(2, 16, 49_152, generator=gen) * torch.tensor([6.0, 15.0])[:, None, None]  # 15: underflows
    new = clean + torch.randn(clean.shape, generator=gen) * 3
    ours = kl(*clean_side(clean), new)
    p = torch.softmax(clean, -1)
    saebench = (p * (torch.log(p) - torch.log(torch.softmax(new, -1)))).sum(-1)
    exact = (torch.softmax(clean.double(), -1) * (torch.log_softmax(clean.double(), -1) - torch.log_softmax(new.double(), -1))).sum(-1)
    assert (p == 0).any() and torch.isfinite(ours).all() and not torch.isfinite(saebench).all()  # 0 * log 0
    finite = torch.isfinite(saebench)
    err, saebench_err = (ours.double() - exact).abs(), (saebench.double() - exact).abs()
    print(f"max abs error vs float64: ours {err.max():.2e}, sae-bench {saebench_err[finite].max():.2e}")
    assert err[finite].max() <= 2 * saebench_err[finite].max()  # fp32 rounding, no worse than its form
    assert abs(ours.double().mean() - exact.mean()) / exact.mean() < RTOL  # the reported mean (1.4e-6 here)
