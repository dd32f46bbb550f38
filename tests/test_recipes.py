"""Formula tests for every recipe piece, sparse-vs-dense parity, sae-lens round trip, and a toy run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from pydantic import ValidationError
from sae_lens.saes.sae import TrainStepInput

from pipeline.recipes.coder import build_coder
from pipeline.recipes.outputs import Active
from pipeline.config.recipe import RecipeSpec
from pipeline.recipes.activation import BatchTopK, _JumpReLUFn, _StepFn, batch_topk_flat
from pipeline.recipes.aux_k import AuxKLoss, DeadLatentTracker
from pipeline.recipes.loss_terms import LossContext
from pipeline.recipes.k_anneal import KSchedule
from pipeline.recipes.loo import loo_prune
from pipeline.recipes.matryoshka import MatryoshkaReconstruction
from pipeline.recipes.ops import SparseOps
from pipeline.recipes.orthogonality import orthogonality_penalty
from pipeline.recipes.outputs import Selection
from pipeline.recipes.saving import load_coder, save_coder
from pipeline.config.recipe import AuxKSpec, BatchTopKSpec, MatryoshkaSpec
from pipeline.recipes.term import TiltedLoss


def set_weights(coder, W_dec, W_enc=None, b_enc=None, b_dec=None) -> None:
    with torch.no_grad():
        coder.W_dec.copy_(torch.as_tensor(W_dec, dtype=torch.float32))
        coder.W_enc.copy_(coder.W_dec.t() if W_enc is None else torch.as_tensor(W_enc, dtype=torch.float32))
        coder.b_enc.copy_(torch.zeros(coder.d_sae) if b_enc is None else torch.as_tensor(b_enc, dtype=torch.float32))
        coder.b_dec.copy_(torch.zeros(coder.d_in) if b_dec is None else torch.as_tensor(b_dec, dtype=torch.float32))


def active_of(rows, latents, values, n_rows) -> Active:
    rows_t = torch.tensor(rows)
    sel = Selection(rows_t, torch.tensor(latents), torch.cumsum(torch.bincount(rows_t, minlength=n_rows), 0) - torch.bincount(rows_t, minlength=n_rows), n_rows)
    return Active.of(sel, torch.tensor(values, dtype=torch.float32))


# -- spec ------------------------------------------------------------------------------------


def test_spec_defaults_yaml_and_messages() -> None:
    spec = RecipeSpec.model_validate(yaml.safe_load("activation: topk\nlista: {}\nk_anneal: {k_start: 64}\n"))
    assert spec.lista.steps == 1 and spec.lista.eta == 0.3 and spec.aux_k is not None and spec.aux_k.k_aux == 512
    assert RecipeSpec().activation == "batchtopk" and RecipeSpec().matryoshka is None
    assert RecipeSpec(activation="relu_l1").aux_k is None  # AuxK default applies to TopK-style only
    with pytest.raises(ValidationError, match="extra"):
        RecipeSpec.model_validate({"activaton": "topk"})
    with pytest.raises(ValidationError, match="strictly increasing"):
        RecipeSpec.model_validate({"matryoshka": {"levels": [8, 8, 16]}})
    with pytest.raises(ValidationError, match="needs a TopK-style"):
        RecipeSpec.model_validate({"activation": "jumprelu", "aux_k": {}})
    with pytest.raises(ValidationError, match="settings for 'jumprelu'"):
        RecipeSpec.model_validate({"activation": "topk", "jumprelu": {"bandwidth": 0.1}})
    with pytest.raises(ValueError, match="must end at d_sae=32"):
        build_coder(RecipeSpec.model_validate({"matryoshka": {"levels": [8, 16]}}), 8, 32, 2)
    with pytest.raises(ValidationError):
        RecipeSpec().activation = "topk"  # frozen


# -- activations -----------------------------------------------------------------------------


def test_batchtopk_keeps_exactly_kB_largest_and_fits_threshold() -> None:
    torch.manual_seed(0)
    h = torch.randn(8, 16)
    act = BatchTopK(BatchTopKSpec(threshold_lr=0.5), 16)
    sel = act.select(h, 3)
    assert sel.rows.numel() == 24
    chosen = h[sel.rows, sel.latents]
    assert torch.equal(torch.sort(chosen).values, torch.sort(h.flatten()).values[-24:])
    assert torch.all(sel.rows[1:] >= sel.rows[:-1])  # row-sorted flat list
    # one row holding all the winners forces the exact fallback of the two-stage search
    h2 = torch.randn(8, 16)
    h2[0] += 100.0
    flat = batch_topk_flat(h2, 16, 4)
    assert set(flat.tolist()) == set(range(16))
    # threshold EMA: theta <- (1 - lr) theta + lr * min kept positive activation
    act.observe(active_of([0, 0, 1], [1, 2, 3], [0.8, 0.4, 2.0], 2))
    assert float(act.threshold_global) == pytest.approx(0.2)
    act.observe(active_of([0], [1], [1.0], 1))
    assert float(act.threshold_global) == pytest.approx(0.6)
    assert act.inference_threshold().tolist() == pytest.approx([0.6] * 16)
    act.per_latent = True
    thr = act.inference_threshold()
    assert float(thr[1]) == pytest.approx(0.9) and float(thr[2]) == pytest.approx(0.4) and float(thr[0]) == pytest.approx(0.6)


def test_jumprelu_pseudo_gradients() -> None:
    eps = 0.001
    h = torch.tensor([0.5, 0.7, 0.5])
    theta = torch.tensor([0.5004, 0.5, 0.4996], requires_grad=True)
    a = _JumpReLUFn.apply(h, theta, eps)
    assert a.tolist() == pytest.approx([0.0, 0.7, 0.5])
    a.sum().backward()
    # d a / d theta = -(theta / eps) * 1[|h - theta| < eps / 2]
    assert theta.grad.tolist() == pytest.approx([-500.4, 0.0, -499.6], rel=1e-4)
    theta.grad = None
    _StepFn.apply(h, theta, eps).sum().backward()
    assert theta.grad.tolist() == pytest.approx([-1000.0, 0.0, -1000.0])


def test_relu_l1_penalty() -> None:
    coder = build_coder(RecipeSpec(activation="relu_l1", relu_l1={"l1_coefficient": 0.5}), 2, 3, 1)
    set_weights(coder, [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    out = coder.training_loss(torch.tensor([[1.0, 0.6], [-1.0, -1.0]]))
    # row 0: h = [1, 0.6, 1.08] -> L1 = 2.68; row 1: all negative -> 0; mean over rows * 0.5
    assert out.metrics["loss/sparsity"] == pytest.approx(0.5 * 2.68 / 2, rel=1e-5)


# -- LISTA -----------------------------------------------------------------------------------


def test_lista_one_step_by_hand() -> None:
    recipe = RecipeSpec(activation="topk", lista={"steps": 1, "eta": 0.3}, aux_k=None)
    coder = build_coder(recipe, 2, 3, 1)
    set_weights(coder, [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    x = torch.tensor([[1.0, 0.6]])
    # h0 = [1, 0.6, 1.08] -> a0 picks latent 2 (1.08); r = x - 1.08 d2 = (0.352, -0.264)
    # h1 = h0 + 0.3 * r W_enc = [1.1056, 0.5208, 1.08] -> latent 0 with 1.1056
    code = coder.encode(x)
    assert code.latents.tolist() == [0] and code.values.tolist() == pytest.approx([1.1056], rel=1e-6)
    out = coder.training_loss(x)
    assert out.active.latents.tolist() == [0] and out.active.values.tolist() == pytest.approx([1.1056], rel=1e-6)
    plain = build_coder(RecipeSpec(activation="topk", aux_k=None), 2, 3, 1)
    set_weights(plain, [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    assert plain.encode(x).latents.tolist() == [2]


# -- K annealing, TERM -----------------------------------------------------------------------


def test_k_anneal_schedule() -> None:
    sched = KSchedule(16, k_start=64, fraction=0.5)
    assert [sched(s, 100) for s in (0, 10, 25, 50, 99)] == [64, 54, 40, 16, 16]
    assert KSchedule(16)(0, 100) == 16
    coder = build_coder(RecipeSpec(activation="topk", k_anneal={"k_start": 8, "fraction": 0.5}), 4, 16, 2)
    assert coder.training_loss(torch.randn(3, 4), step=0, total_steps=10).active.latents.numel() == 3 * 8
    assert coder.training_loss(torch.randn(3, 4), step=5, total_steps=10).active.latents.numel() == 3 * 2


def test_term_weights_by_hand() -> None:
    l = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    term = TiltedLoss(t=3.0)
    # w = softmax(3 * l / 2) = softmax([1.5, 3, 4.5])
    assert term.weights(l).tolist() == pytest.approx([0.0391126, 0.1752904, 0.7855970], rel=1e-5)
    loss = term(l)
    assert float(loss.detach()) == pytest.approx(2.7464845, rel=1e-6)
    loss.backward()
    assert l.grad.tolist() == pytest.approx([0.0391126, 0.1752904, 0.7855970], rel=1e-5)  # weights carry no gradient
    assert float(TiltedLoss(1e-9)(torch.tensor([1.0, 2.0, 6.0]))) == pytest.approx(3.0)


# -- orthogonality, LOO ----------------------------------------------------------------------


def test_orthogonality_penalty_by_hand() -> None:
    W_dec = torch.tensor([[1.0, 0.0], [1.2, 1.6], [0.8, 0.6]])  # row 1 has norm 2: normalised inside
    # masks: row0 {0,1}, row1 {0,1,2}, row2 {1,2}, row3 {0} -> C01 = 0.5, C02 = 0.25, C12 = 0.5
    active = active_of([0, 0, 1, 1, 1, 2, 2, 3], [0, 1, 0, 1, 2, 1, 2, 0], [1.0] * 8, 4)
    # |d0.d1| = 0.6, |d0.d2| = 0.8, |d1.d2| = 0.96
    assert float(orthogonality_penalty(active, W_dec, 2.0, 0.0)) == pytest.approx(2 * (0.3 + 0.2 + 0.48), rel=1e-6)
    assert float(orthogonality_penalty(active, W_dec, 2.0, 0.3)) == pytest.approx(2 * (0.3 + 0.48), rel=1e-6)


def test_loo_zeroes_exactly_the_latents_meeting_the_inequality() -> None:
    W_dec = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    x = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    active = active_of([0, 0, 1], [0, 2, 1], [0.5, 0.5, 1.0], 2)
    # row 0: x_hat = (0.8, 0.4), r = (0.2, 0.6): score0 = 0.2 + 0.5 = 0.7, score2 = 0.6 + 0.5 = 1.1
    # row 1: x_hat = (0, 1), r = (0, 1): score1 = 1 + 1 = 2
    def kept(tau: float) -> list[tuple[int, int]]:
        out = loo_prune(x, active, W_dec, torch.zeros(2), tau)
        return list(zip(out.rows.tolist(), out.latents.tolist()))

    assert kept(0.65) == [(0, 0), (0, 2), (1, 1)]
    assert kept(1.0) == [(0, 2), (1, 1)]
    assert kept(1.5) == [(1, 1)]
    assert kept(2.5) == []


# -- Matryoshka ------------------------------------------------------------------------------


def _dense_prefix_losses(coder, x: torch.Tensor, levels: list[int]) -> list[torch.Tensor]:
    acts = coder.encode_dense(x)
    return [((x - coder.b_dec - acts[:, :w] @ coder.W_dec[:w]) ** 2).sum(-1).mean() for w in levels]


def test_matryoshka_loss_is_sum_of_prefix_losses() -> None:
    torch.manual_seed(1)
    recipe = RecipeSpec(activation="topk", matryoshka={"levels": [2, 4, 8]}, aux_k=None)
    coder = build_coder(recipe, 4, 8, 3, seed=3)
    with torch.no_grad():
        coder.b_dec.copy_(torch.randn(4) * 0.1)
    x = torch.randn(5, 4)
    expected = sum(_dense_prefix_losses(coder, x, [2, 4, 8]))
    assert coder.training_loss(x).metrics["loss/reconstruction"] == pytest.approx(float(expected), rel=1e-5)


def test_matryoshka_inner_weight_scales_only_the_inner_levels() -> None:
    torch.manual_seed(1)
    recipe = RecipeSpec(activation="topk", matryoshka={"levels": [2, 4, 8], "inner_weight": 0.25}, aux_k=None)
    coder = build_coder(recipe, 4, 8, 3, seed=3)
    x = torch.randn(5, 4)
    inner_2, inner_4, full = _dense_prefix_losses(coder, x, [2, 4, 8])
    expected = 0.25 * (inner_2 + inner_4) + full
    assert coder.training_loss(x).metrics["loss/reconstruction"] == pytest.approx(float(expected), rel=1e-5)
    assert float(full) < float(expected) < float(inner_2 + inner_4 + full)  # the weight moved the value
    plain = RecipeSpec(activation="topk", matryoshka={"levels": [2, 4, 8]}, aux_k=None)
    assert "inner_weight" not in plain.model_dump_json()  # a quiet default: existing stage keys unchanged
    assert "inner_weight" in recipe.model_dump_json()


@pytest.mark.parametrize("detach", [False, True])
def test_matryoshka_detach_inner_blocks_inner_gradients(detach: bool) -> None:
    torch.manual_seed(2)
    recon = MatryoshkaReconstruction(MatryoshkaSpec(levels=(2, 4, 8), detach_inner=detach), 8)
    W_dec = torch.randn(8, 3, requires_grad=True)
    x = torch.randn(4, 3)
    rows = torch.arange(4).repeat_interleave(8)
    active = Active.of(Selection(rows, torch.arange(8).repeat(4), torch.arange(0, 32, 8), 4), torch.rand(32))

    def inner_row_grad(level: int) -> float:
        W_dec.grad = None
        out = recon(x, active, W_dec, torch.zeros(3), SparseOps)
        out.level_losses[level].sum().backward()
        return float(W_dec.grad[:2].abs().sum())

    assert inner_row_grad(0) > 0  # level 0 trains its own latents
    assert inner_row_grad(2) > 0  # the outermost level always reaches inner latents
    assert (inner_row_grad(1) == 0) == detach  # the middle level reaches them only without detach


def test_matryoshka_frequency_ordering() -> None:
    recon = MatryoshkaReconstruction(MatryoshkaSpec(levels=(1, 2, 4), order_by_frequency=True, frequency_ema=0.5), 4)
    recon.frequency.copy_(torch.tensor([0.1, 0.9, 0.5, 0.0]))
    # order by frequency: latent 1, 2, 0, 3 -> levels [2, 0, 1, 2]
    assert recon.levels_of(torch.arange(4)).tolist() == [2, 0, 1, 2]
    recon.observe(active_of([0, 1, 1], [3, 3, 0], [1.0, 1.0, 1.0], 2))
    # f <- 0.5 f + 0.5 * (firings / rows): rates [0.5, 0, 0, 1]
    assert recon.frequency.tolist() == pytest.approx([0.3, 0.45, 0.25, 0.5])
    assert recon.levels_of(torch.arange(4)).tolist() == [2, 1, 2, 0]
    unordered = MatryoshkaReconstruction(MatryoshkaSpec(levels=(1, 2, 4)), 4)
    assert unordered.levels_of(torch.arange(4)).tolist() == [0, 1, 2, 2]


# -- AuxK ------------------------------------------------------------------------------------


def test_aux_k_reconstructs_residual_with_dead_latents() -> None:
    coder = build_coder(RecipeSpec(activation="topk", aux_k={"k_aux": 1, "coefficient": 0.5}), 2, 3, 1)
    set_weights(coder, [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    x = torch.tensor([[1.0, 0.6]])
    assert coder.training_loss(x, dead_mask=torch.zeros(3, dtype=torch.bool)).metrics["loss/aux_k"] == 0.0
    dead = torch.tensor([True, True, False])
    # live top-1 is latent 2 (1.08): e = x - 1.08 d2 = (0.352, -0.264); dead top-1 is latent 0 (h=1):
    # e_hat = 1 * d0 -> |e - e_hat|^2 = 0.648^2 + 0.264^2
    expected = 0.5 * (0.648**2 + 0.264**2)
    assert coder.training_loss(x, dead_mask=dead).metrics["loss/aux_k"] == pytest.approx(expected, rel=1e-5)
    tracker = DeadLatentTracker(3, window=2)
    mask = tracker.update(active_of([0], [1], [1.0], 2))
    mask = tracker.update(active_of([0], [2], [1.0], 1))
    assert mask.tolist() == [True, False, False]


# -- sparse vs dense parity ------------------------------------------------------------------

PARITY_RECIPES = [
    {},
    {"activation": "topk", "lista": {"steps": 2}, "matryoshka": {"levels": [8, 24, 48], "detach_inner": True},
     "term": {}, "orthogonality": {"coefficient": 0.1}},
    {"matryoshka": {"levels": [16, 48], "order_by_frequency": True}, "batchtopk": {"threshold": "per_latent"}, "k_anneal": {"k_start": 12}},
    {"activation": "jumprelu", "jumprelu": {"bandwidth": 0.05, "init_threshold": 0.1}},
    {"activation": "relu_l1", "relu_l1": {"l1_coefficient": 0.1}},
    {"decoder": {"norm": "rescale", "init_norm": 0.1}, "b_dec_init": "zeros", "matryoshka": {"levels": [16, 48]},
     "aux_k": {"k_aux": 6, "coefficient": 1.0, "scale_by_dead": True, "relu": False}},
]


@pytest.mark.parametrize("raw", PARITY_RECIPES)
def test_sparse_and_dense_paths_agree(raw: dict) -> None:
    recipe = RecipeSpec.model_validate(raw)
    torch.manual_seed(0)
    x = torch.randn(32, 12) + 0.3
    dead = torch.zeros(48, dtype=torch.bool)
    dead[::3] = True
    coders = [build_coder(recipe, 12, 48, 4, seed=7, dense=d) for d in (False, True)]
    opts = [torch.optim.Adam(c.parameters(), lr=1e-2) for c in coders]
    curves: list[list[float]] = [[], []]
    for step in range(5):
        grads = []
        for i, (coder, opt) in enumerate(zip(coders, opts)):
            out = coder.training_loss(x, step, 10, dead)
            opt.zero_grad()
            out.loss.backward()
            grads.append({n: p.grad.clone() for n, p in coder.named_parameters() if p.grad is not None})
            curves[i].append(float(out.loss))
            opt.step()
            coder.normalize_decoder()
        if step == 0:
            assert grads[0].keys() == grads[1].keys()
            for name, g in grads[1].items():
                err = float((grads[0][name] - g).norm() / g.norm().clamp_min(1e-12))
                assert err < 1e-5, (name, err)
    assert curves[0] == pytest.approx(curves[1], rel=1e-5)


# -- saving ----------------------------------------------------------------------------------


ROUND_TRIP_RECIPES = {
    "batchtopk": {}, "topk": {"activation": "topk"}, "jumprelu": {"activation": "jumprelu"}, "relu_l1": {"activation": "relu_l1"},
    "jumprelu_sae_lens_style": {"activation": "jumprelu", "decoder": {"norm": "free", "init_norm": 0.1},
                                "jumprelu": {"init_threshold": 0.01, "bandwidth": 0.05, "threshold_param": "direct"}},
    "relu_l1_free": {"activation": "relu_l1", "decoder": {"norm": "free", "init_norm": 0.5}},
}


@pytest.mark.parametrize("name", list(ROUND_TRIP_RECIPES))
def test_sae_lens_round_trip(tmp_path: Path, name: str) -> None:
    """Free decoders are folded on saving (threshold scaled too), so sae-lens's inference matches ours."""
    from sae_lens import SAE

    recipe = RecipeSpec.model_validate(ROUND_TRIP_RECIPES[name])
    activation = recipe.activation
    coder = build_coder(recipe, 12, 48, 4, seed=1)
    torch.manual_seed(0)
    opt = torch.optim.Adam(coder.parameters(), lr=1e-2)
    for step in range(3):
        out = coder.training_loss(torch.randn(64, 12), step, 3)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        coder.normalize_decoder()
    save_coder(coder, tmp_path)
    sae = SAE.load_from_disk(tmp_path)
    x = torch.randn(16, 12)
    with torch.no_grad():
        acts = coder.encode_dense(x)
        assert int((acts != 0).sum()) > 0
        torch.testing.assert_close(sae.encode(x), acts, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae.decode(acts), coder.decode(coder.encode(x)), rtol=1e-5, atol=1e-5)
    assert sae.cfg.metadata["saepipe_recipe"]["activation"] == activation


def test_load_coder_restores_full_recipe(tmp_path: Path) -> None:
    recipe = RecipeSpec.model_validate({"lista": {"eta": 0.2}, "loo": {"tau": 0.05}, "batchtopk": {"threshold": "per_latent"}})
    coder = build_coder(recipe, 12, 48, 4, seed=1)
    coder.training_loss(torch.randn(64, 12))
    save_coder(coder, tmp_path)
    again = load_coder(tmp_path)
    assert again.recipe == recipe
    x = torch.randn(16, 12)
    torch.testing.assert_close(again.encode_dense(x), coder.encode_dense(x))
    import json

    note = json.loads((tmp_path / "cfg.json").read_text())["metadata"]["saepipe_inference_note"]
    assert "LISTA" in note and "LOO" in note


# -- toy training run ------------------------------------------------------------------------


def test_training_recovers_planted_dictionary() -> None:
    gen = torch.Generator().manual_seed(0)
    true = F.normalize(torch.randn(32, 16, generator=gen), dim=-1)

    def batch(n: int) -> torch.Tensor:
        idx = torch.rand(n, 32, generator=gen).argsort(-1)[:, :3]
        return ((torch.rand(n, 3, generator=gen) + 0.5)[..., None] * true[idx]).sum(1)

    coder = build_coder(RecipeSpec(), 16, 64, 3, seed=0)
    opt = torch.optim.Adam(coder.parameters(), lr=3e-3)
    tracker = DeadLatentTracker(64, window=2000)
    dead, mse, steps = None, [], 300
    for step in range(steps):
        out = coder.training_loss(batch(256), step, steps, dead)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        coder.normalize_decoder()
        dead = tracker.update(out.active)
        mse.append(out.metrics["mse"])
    assert sum(mse[-20:]) / 20 < 0.15 * mse[0]
    cos = (true @ F.normalize(coder.W_dec.detach(), dim=-1).t()).max(-1).values
    assert float((cos > 0.9).float().mean()) >= 0.9, cos
    x = batch(512)
    fvu = float((x - coder(x)).pow(2).sum() / (x - x.mean(0)).pow(2).sum())  # inference uses the fitted threshold
    assert fvu < 0.2


# -- parity with sae-lens's training SAEs (issue 11) -----------------------------------------

SAE_LENS_STYLE = {"decoder": {"norm": "rescale", "init_norm": 0.1}, "b_dec_init": "zeros",
                  "aux_k": {"k_aux": 8, "coefficient": 1.0, "scale_by_dead": True, "relu": False}}
"""Our recipe settings that compute sae-lens's TopK / BatchTopK (d_in 16: sae-lens's k_aux is d_in // 2 = 8)."""
SAE_LENS_JUMPRELU = {"activation": "jumprelu", "decoder": {"norm": "free", "init_norm": 0.1}, "b_dec_init": "zeros",
                     "jumprelu": {"init_threshold": 0.01, "bandwidth": 0.05, "threshold_param": "direct"}}
"""Our recipe settings that compute sae-lens's JumpReLU (its defaults: step L0 loss, coefficient 1.0, no warm-up,
no pre-act loss, no STE to the input)."""
PARITY_LOSS_RTOL = 1e-5
"""Per-step relative loss difference allowed over 100 steps (fp32 summation order; observed ~2e-7)."""
PARITY_ARCHS = ["topk", "batchtopk", "matryoshka", "jumprelu"]


def _sae_lens_reference(arch: str, d_in: int, d_sae: int, k: int) -> object:
    """sae-lens's training SAE for `arch` at its defaults (torch.manual_seed(0) before: its kaiming init)."""
    import sae_lens as sl

    torch.manual_seed(0)
    shape = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu"}
    if arch == "matryoshka":
        return sl.MatryoshkaBatchTopKTrainingSAE(sl.MatryoshkaBatchTopKTrainingSAEConfig(**shape, k=k, matryoshka_widths=[16, 32, 64]))
    if arch == "jumprelu":
        return sl.JumpReLUTrainingSAE(sl.JumpReLUTrainingSAEConfig(**shape))
    cls, cfg = {"topk": (sl.TopKTrainingSAE, sl.TopKTrainingSAEConfig), "batchtopk": (sl.BatchTopKTrainingSAE, sl.BatchTopKTrainingSAEConfig)}[arch]
    return cls(cfg(**shape, k=k))


def _our_recipe(arch: str, sae_lens_style: bool) -> RecipeSpec:
    activation = {"matryoshka": "batchtopk"}.get(arch, arch)
    raw: dict = {"activation": activation}
    if sae_lens_style:
        raw |= SAE_LENS_JUMPRELU if arch == "jumprelu" else SAE_LENS_STYLE
    if arch == "matryoshka":
        raw["matryoshka"] = {"levels": [16, 32, 64]}
    return RecipeSpec.model_validate(raw)


def _loss_curves(arch: str, sae_lens_style: bool, steps: int = 100) -> tuple[list[float], list[float], object, object]:
    """Train sae-lens's training SAE (training_forward_pass + Adam, clip 1.0 and its coefficient schedule, as
    its SAETrainer steps it) and our coder (sparse ops, the CPU path) from the same weights on the same
    batches with the same dead mask; both loss curves."""
    from sae_lens.training.optim import CoefficientScheduler

    d_in, d_sae, k = 16, 64, 4
    ref = _sae_lens_reference(arch, d_in, d_sae, k)
    spec = _our_recipe(arch, sae_lens_style)
    ours = build_coder(spec, d_in, d_sae, k, seed=0)
    if sae_lens_style:
        with torch.no_grad():
            for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
                getattr(ours, name).copy_(getattr(ref, name))
    schedulers = {}
    for name, c in ref.get_coefficients().items():
        value, warm_up = (c, 0) if isinstance(c, (int, float)) else (c.value, c.warm_up_steps)
        schedulers[name] = CoefficientScheduler(warm_up_steps=warm_up, final_value=value)
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (ref, ours)]
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(48, d_in, generator=gen)
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[::5] = True  # a fixed dead set, so the AuxK term is on at every step
    curves: tuple[list[float], list[float]] = ([], [])
    for step in range(steps):
        x = ((torch.rand(128, 48, generator=gen) < 0.1) * torch.rand(128, 48, generator=gen) * 3) @ features + 0.5
        if step == 0:
            ours.init_b_dec(x)
        coefficients = {name: s.value for name, s in schedulers.items()}
        losses = [
            ref.training_forward_pass(TrainStepInput(sae_in=x, coefficients=coefficients, dead_neuron_mask=dead, n_training_steps=step, is_logging_step=False)).loss,
            ours.training_loss(x, step, steps, dead).loss,
        ]
        for model, opt, loss, curve in zip((ref, ours), opts, losses, curves):
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            curve.append(loss.item())
        ours.normalize_decoder()
        for s in schedulers.values():
            s.step()
    return *curves, ref, ours


@pytest.mark.parametrize("arch", PARITY_ARCHS)
def test_sae_lens_style_settings_reproduce_sae_lens_training(arch: str) -> None:
    """Sparse ops (the CPU path); dense equals sparse by test_sparse_and_dense_paths_agree."""
    ref_curve, our_curve, ref, ours = _loss_curves(arch, sae_lens_style=True)
    rel = [abs(a - b) / a for a, b in zip(ref_curve, our_curve)]
    assert max(rel) < PARITY_LOSS_RTOL, max(rel)
    assert our_curve[-1] < 0.8 * our_curve[0]  # it trained: a matching curve that stays flat proves nothing
    if arch in ("batchtopk", "matryoshka"):
        torch.testing.assert_close(ours.activation.threshold_global, ref.topk_threshold, rtol=1e-4, atol=1e-7)
    if arch == "jumprelu":
        torch.testing.assert_close(ours.activation.threshold, ref.threshold, rtol=0, atol=1e-5)
        assert (ref.threshold - 0.01).abs().max() > 0.01  # the thresholds moved
    torch.testing.assert_close(ours.W_dec, ref.W_dec, rtol=0, atol=1e-5)  # free (not unit) rows, as sae-lens's
    assert abs(ours.W_dec.detach().norm(dim=-1).mean().item() - 1.0) > 0.05
    x = torch.randn(32, 16) + 0.5
    before, recon = ours.encode_dense(x), ours(x)
    assert int((before != 0).sum()) > 0
    ours.fold_decoder_norm()  # what saving does: same latents and reconstruction, unit rows
    after = ours.encode_dense(x)
    assert torch.equal(after != 0, before != 0)
    torch.testing.assert_close(ours(x), recon, rtol=1e-4, atol=1e-5)
    if arch != "jumprelu":  # rescale: the codes were in unit-row units already; free: they scale by the norms
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.W_dec.norm(dim=-1), torch.ones(64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["batchtopk", "jumprelu"])
def test_our_defaults_are_not_sae_lens_training(arch: str) -> None:
    """The knobs matter: with today's defaults the same data gives a different curve."""
    ref_curve, our_curve, _, _ = _loss_curves(arch, sae_lens_style=False, steps=40)
    assert abs(ref_curve[-1] - our_curve[-1]) / ref_curve[-1] > 0.05


def test_new_recipe_settings_stay_out_of_keys_at_their_defaults() -> None:
    assert set(RecipeSpec().model_dump()) == {"activation", "batchtopk", "jumprelu", "relu_l1", "matryoshka", "lista",
                                              "k_anneal", "term", "orthogonality", "aux_k", "loo"}
    assert RecipeSpec().model_dump()["aux_k"] == {"k_aux": 512, "coefficient": 1 / 32}
    assert RecipeSpec().model_dump()["jumprelu"] == {"init_threshold": 0.001, "bandwidth": 0.001, "l0_coefficient": 1.0}
    jumprelu = RecipeSpec.model_validate(SAE_LENS_JUMPRELU).model_dump(mode="json")
    assert jumprelu["jumprelu"]["threshold_param"] == "direct" and jumprelu["decoder"]["norm"] == "free"
    assert RecipeSpec.model_validate(jumprelu) == RecipeSpec.model_validate(SAE_LENS_JUMPRELU)
    dumped = RecipeSpec.model_validate(SAE_LENS_STYLE).model_dump(mode="json")
    assert dumped["decoder"] == {"norm": "rescale", "init_norm": 0.1} and dumped["b_dec_init"] == "zeros"
    assert RecipeSpec.model_validate(dumped) == RecipeSpec.model_validate(SAE_LENS_STYLE)
    with pytest.raises(ValidationError, match="decoder.init_norm != 1 needs decoder.norm 'rescale'"):
        RecipeSpec.model_validate({"decoder": {"init_norm": 0.1}})


def test_jumprelu_direct_threshold_is_clamped_before_each_forward_and_free_decoder_is_left_alone() -> None:
    coder = build_coder(RecipeSpec.model_validate(SAE_LENS_JUMPRELU), 4, 8, 1)
    assert set(dict(coder.named_parameters())) == {"W_dec", "W_enc", "b_enc", "b_dec", "activation.direct_threshold"}
    with torch.no_grad():
        coder.activation.direct_threshold[:3] = -0.2
    W_dec = coder.W_dec.detach().clone()
    torch.testing.assert_close(W_dec.norm(dim=-1), torch.full((8,), 0.1))
    coder.training_loss(torch.randn(16, 4))
    assert coder.activation.threshold[:3].tolist() == [0.0, 0.0, 0.0]
    assert coder.activation.threshold[3:].tolist() == pytest.approx([0.01] * 5)
    coder.normalize_decoder()
    assert torch.equal(coder.W_dec, W_dec)
    with pytest.raises(ValidationError, match="decoder.norm 'free' is for jumprelu / relu_l1"):
        RecipeSpec.model_validate({"activation": "topk", "decoder": {"norm": "free"}})


def test_aux_k_scale_and_relu_knobs() -> None:
    """L_aux = c * min(n_dead / k_aux, 1) * mean ||e - z W_dec||^2, z ReLU'd or not."""
    coder = build_coder(RecipeSpec(), 2, 4, 1)
    set_weights(coder, [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], W_enc=[[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0]])
    x = torch.tensor([[2.0, 0.5]])
    dead = torch.tensor([False, False, True, True])
    W_enc, b_enc, W_dec = coder.effective_weights()
    enc = coder.encoder(x, W_enc, b_enc, W_dec, coder.b_dec, coder.activation, lambda h: coder.activation.select(h, 1), coder.ops)
    recon = coder.reconstruction(x, enc.active, W_dec, coder.b_dec, coder.ops)
    ctx = LossContext(x, enc, recon, dead, W_enc, b_enc, W_dec, coder.ops)
    e = x - recon.x_hat  # x_hat = latent 0 at 2.0 -> e = (0, 0.5); dead pre-acts: latent 2 = -2, latent 3 = -0.5
    top = torch.tensor([[0.0, -0.5]])  # k_aux 1: latent 3 (-0.5) beats latent 2 (-2)
    plain = float(AuxKLoss(AuxKSpec(k_aux=1, coefficient=1.0))(ctx))
    raw = float(AuxKLoss(AuxKSpec(k_aux=1, coefficient=1.0, relu=False))(ctx))
    scaled = float(AuxKLoss(AuxKSpec(k_aux=4, coefficient=1.0, scale_by_dead=True, relu=False))(ctx))
    assert plain == pytest.approx(float(e.pow(2).sum()))  # ReLU zeroes the negative pre-activation
    assert raw == pytest.approx(float((e - top).pow(2).sum()))
    both = torch.tensor([[2.0, -0.5]])  # k_aux 4 -> both dead latents: -2 * (1,0) + -0.5 * (0,1)
    assert scaled == pytest.approx(0.5 * float((e - both).pow(2).sum()))  # 2 dead / k_aux 4
