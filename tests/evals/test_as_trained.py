"""Evals run an SAE as it was trained: a LISTA (+ LOO) SAE, loaded by the eval stages' loader, encodes
exactly as our coder does, not as sae-lens's plain encoder for the saved architecture."""

from __future__ import annotations

import pytest
import torch
from sae_lens import SAE

from pipeline.artifacts import ArtifactStore
from pipeline.executors.stage_runner import execute
from pipeline.loading import parse_config
from pipeline.plan import build_plan
from pipeline.progress import Reporter
from pipeline.recipes.as_trained import AsTrained, load_as_trained
from pipeline.recipes.saving import load_coder
from pipeline.stages.context import StageContext
from pipeline.stages.eval_stages import load_trained_sae
from tests.conftest import tiny_config

QUIET = Reporter(enabled=False)
LISTA = {"activation": "batchtopk", "lista": {"steps": 1, "eta": 0.3}, "loo": {"tau": 0.0}}


@pytest.fixture(scope="module")
def lista_run(tiny_run, shared_artifacts) -> tuple:
    """A LISTA + LOO SAE trained on the tiny run's cached activations; the eval_core stage that reads it."""
    base = tiny_config()
    cfg = parse_config(tiny_config(saes=[{**base["saes"][0], "name": "lista", "recipe": LISTA}]))
    store = ArtifactStore(shared_artifacts)
    stages = build_plan(cfg)
    for s in stages:
        if s.kind in ("activations", "train") and not store.is_complete(s.kind, s.key):
            execute(cfg, store, s, QUIET)
    core = next(s for s in stages if s.kind == "eval_core")
    ctx = StageContext(core, cfg, store, store.staging_dir(core.kind, core.key), store.work_dir(core.kind, core.key), QUIET)
    return cfg, store, ctx


def hook_activations(cfg, store: ArtifactStore, ctx: StageContext) -> torch.Tensor:
    """Real activations at the hook: the first shard's rows."""
    import pyarrow.parquet as pq

    acts = ctx.stage.inputs["sae"].inputs["activations"]
    shard = min((store.path(acts.kind, acts.key) / "shards").glob("*.parquet"))
    return torch.tensor(pq.read_table(shard, columns=["act"]).column("act").to_pylist()[:512], dtype=torch.float32)


def close_rows(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-6) -> bool:
    return bool(((a - b).norm(dim=-1) <= rtol * b.norm(dim=-1)).all())


def test_the_eval_loader_encodes_as_the_coder(lista_run) -> None:
    cfg, store, ctx = lista_run
    sae = load_trained_sae(ctx, cfg.model.device)
    folder = ctx.store.path("train", ctx.stage.inputs["sae"].key) / "sae"
    coder = load_coder(folder)
    plain = SAE.load_from_disk(str(folder))
    x = hook_activations(cfg, store, ctx)

    assert isinstance(sae, AsTrained) and isinstance(sae, type(plain))
    ours = coder.encode(x)
    codes = sae.encode(x)
    assert torch.equal(codes, ours.dense(coder.d_sae))
    # sae-lens's dense decode of the same codes: equal up to float summation order (a matmul against
    # our sparse gather-and-sum), i.e. fp32 rounding relative to each reconstruction's norm
    assert close_rows(sae.decode(codes), coder.decode(ours)) and close_rows(sae(x), coder(x))
    # batch shape as sae-bench hands it over: (batch, pos, d_in)
    assert torch.equal(sae.encode(x.reshape(8, 64, -1)), codes.reshape(8, 64, -1))

    plain_codes = plain.encode(x)
    assert not torch.equal(plain_codes, codes)
    assert (sae.decode(codes) - x).pow(2).sum() < (sae.decode(plain_codes) - x).pow(2).sum()  # what LISTA + LOO buy, and what a plain sae-lens eval would miss


def test_the_coder_shares_the_saes_weights(lista_run) -> None:
    cfg, _, ctx = lista_run
    sae = load_trained_sae(ctx, cfg.model.device)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert getattr(sae.coder, name) is getattr(sae, name)
    sae = sae.to(dtype=torch.float64)  # what sae-bench does to match an LLM's dtype moves the coder too
    assert sae.coder.W_enc.dtype == torch.float64 and sae.encode(torch.zeros(2, sae.cfg.d_in, dtype=torch.float64)).dtype == torch.float64


def test_plain_recipes_stay_plain_sae_lens(tiny_run) -> None:
    """No LISTA, no LOO: sae-lens's class already encodes as trained, so it is returned as is."""
    _, store, train = tiny_run
    sae = load_as_trained(store.path("train", train.key) / "sae")
    assert type(sae) is SAE.get_sae_class_for_architecture(sae.cfg.architecture())
