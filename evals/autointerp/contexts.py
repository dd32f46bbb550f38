"""Latent contexts sampled as SAEBench samples them, streamed: the (tokens x d_sae) matrix is never built.

SAEBench (``AutoInterp.gather_data``) holds every sampled latent's activation over every token, then takes
(1) the top ``n_top_ex`` tokens with no two within ``buffer`` in one context (``get_k_largest_indices``),
(2) ``n_iw`` tokens importance-sampled without replacement with probability ~ activation squared among
tokens below the weakest top one (``get_iw_sample_indices``), (3) uniform random tokens. Each example is
the window of ``buffer`` tokens either side. Here three passes over the cached activations keep only:

* pass 0: firing counts per latent (which latents are alive, to sample among);
* pass 1: per sampled latent the running top ``k * (2 * buffer + 1)`` tokens. SAEBench's greedy
  no-overlap pick looks at no more than that many tokens before it has ``k`` (each pick suppresses at most
  ``2 * buffer`` neighbours), so running it on the pool picks exactly what it picks on the full matrix;
* pass 2: the windows of the chosen top tokens and random tokens, and a weighted reservoir for (2): keys
  ``log(u) / w`` (Efraimidis-Spirakis), whose top ``n_iw`` are a sample without replacement with
  probability ~ ``w``, the distribution of ``torch.multinomial(..., replacement=False)``.

The random draws are ``NEGATIVE_DRAWS`` times SAEBench's number: SAEBench's random examples are the first
of them; the delphi-style scorers' negatives are the first ones the latent does not fire in.

Memory is one batch of ``sae_batch_size`` contexts x d_sae plus pools of size (pool x sampled latents).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from evals.autointerp.config import AutointerpConfig
from evals.contract import Prepared

NEGATIVE_DRAWS = 4


@dataclass
class Window:
    """One example: ``2 * buffer + 1`` tokens centred on (row, col) and the latent's activations on them."""

    row: int
    col: int
    tokens: list[int]
    acts: list[float]
    kind: str
    """'top', 'iw' or 'random'."""


@dataclass
class LatentContexts:
    latent: int
    top: list[Window]
    iw: list[Window]
    random: list[Window]
    negatives: list[Window]
    """Random windows the latent does not fire in (the delphi-style scorers' negatives)."""
    act_threshold: float
    """``act_threshold_frac`` x the largest activation in the top windows (SAEBench's)."""


def encoded_batches(prepared: Prepared, sae: Any, batch: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, SAE activations [B, L, d_sae]) per batch of cached contexts, zero at BOS / EOS / pad."""
    row = 0
    for acts, mask in zip(prepared.batches("acts", batch), prepared.batches("mask", batch)):
        with torch.no_grad():
            lat = sae.encode(acts.to(sae.W_enc.device, sae.W_enc.dtype)).float().cpu()
        yield row, lat * mask[:, :, None]
        row += len(acts)


def firing_counts(prepared: Prepared, sae: Any, p: AutointerpConfig) -> tuple[torch.Tensor, int]:
    """Pass 0: tokens each latent fires on, and the unmasked token count."""
    counts, n = None, 0
    for _, lat in encoded_batches(prepared, sae, p.sae_batch_size):
        fired = (lat > 0).sum(dim=(0, 1))
        counts = fired if counts is None else counts + fired
    for mask in prepared.batches("mask", p.sae_batch_size):
        n += int(mask.sum())
    assert counts is not None
    return counts, n


def sample_latents(counts: torch.Tensor, n_unmasked: int, n_tokens: int, p: AutointerpConfig) -> list[int]:
    """SAEBench's choice: sparsity (over unmasked tokens) x tokens above ``dead_latent_threshold`` is alive;
    ``random.sample`` of ``n_latents`` of them after ``random.seed(random_seed)`` (all if fewer)."""
    sparsity = counts.double() / max(1, n_unmasked)
    alive = torch.nonzero(sparsity * n_tokens > p.dead_latent_threshold).squeeze(1).tolist()
    if len(alive) <= p.n_latents:
        return alive
    return random.Random(p.random_seed).sample(alive, k=p.n_latents)


def greedy_no_overlap(rows: list[int], cols: list[int], k: int, buffer: int, no_overlap: bool) -> list[int]:
    """Indices into the (value-sorted) candidates that ``get_k_largest_indices`` keeps."""
    if not no_overlap:
        return list(range(min(k, len(rows))))
    keep, seen = [], set()
    for i, (r, c) in enumerate(zip(rows, cols)):
        if (r, c) not in seen:
            keep.append(i)
            seen.update((r, c + o) for o in range(-buffer, buffer + 1))
        if len(keep) == k:
            break
    return keep


def _merge(pool: tuple[torch.Tensor, ...] | None, new: tuple[torch.Tensor, ...], size: int) -> tuple[torch.Tensor, ...]:
    """Keep the ``size`` largest keys (first tensor, [n, latents]) of pool + new, carrying the other tensors."""
    both = new if pool is None else tuple(torch.cat([a, b]) for a, b in zip(pool, new))
    keys, order = both[0].topk(min(size, len(both[0])), dim=0)
    return (keys, *(t.gather(0, order.view(*order.shape, *[1] * (t.dim() - 2)).expand(-1, -1, *t.shape[2:]))
                    for t in both[1:]))  # fmt: skip


def _inner(lat: torch.Tensor, b: int) -> torch.Tensor:
    """[B, L, n] -> [B * (L - 2b), n]: the tokens a window can be centred on."""
    return lat[:, b : lat.shape[1] - b, :].reshape(-1, lat.shape[2])


def _positions(flat: torch.Tensor, row0: int, width: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    return flat // width + row0, flat % width + b


def _windows(lat: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, b: int,
             latent: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """lat [B, L, n], rows / cols [k, m] (batch-local) of latents ``latent`` [k or 1, m] (default: column
    j is latent j) -> activations [k, m, 2b + 1] around each."""
    offsets = torch.arange(-b, b + 1)
    latent = torch.arange(lat.shape[2]).view(1, -1) if latent is None else latent
    return lat[rows[..., None], cols[..., None] + offsets, latent[..., None]]


def top_positions(prepared: Prepared, sae: Any, latents: list[int], p: AutointerpConfig) -> tuple[torch.Tensor, ...]:
    """Pass 1: rows, cols and activations [n_top_ex, n] of each latent's top tokens, SAEBench's greedy pick."""
    b, size = p.buffer, p.n_top_ex * (2 * p.buffer + 1)
    pool = None
    for row0, lat in encoded_batches(prepared, sae, p.sae_batch_size):
        lat = lat[:, :, latents]
        flat = _inner(lat, b)
        values, idx = flat.topk(min(size, len(flat)), dim=0)
        rows, cols = _positions(idx, row0, lat.shape[1] - 2 * b, b)
        pool = _merge(pool, (values, rows, cols), size)
    assert pool is not None
    values, rows, cols = pool
    picked: list[list[tuple[int, int, float]]] = []
    for j in range(len(latents)):
        r, c = rows[:, j].tolist(), cols[:, j].tolist()
        picked.append([(r[i], c[i], float(values[i, j])) for i in greedy_no_overlap(r, c, p.n_top_ex, b, p.no_overlap)])
    if any(len(x) < p.n_top_ex for x in picked):
        raise RuntimeError(f"evals.autointerp: too few held-out tokens for n_top_ex={p.n_top_ex} with buffer={b}")
    rows_t, cols_t, values_t = (torch.tensor([[t[f] for t in x] for x in picked]).T for f in range(3))
    return rows_t.long(), cols_t.long(), values_t


def gather_contexts(prepared: Prepared, sae: Any, latents: list[int], p: AutointerpConfig) -> dict[int, LatentContexts]:
    """Top, importance-weighted, random and negative windows per latent; latents whose weights run out (SAEBench's
    'dead' test: nothing below the weakest top token, or fewer such tokens than ``n_iw``) are left out."""
    b, n = p.buffer, len(latents)
    tokens = prepared.tensor("tokens")
    n_ctx, length = tokens.shape
    top_rows, top_cols, top_values = top_positions(prepared, sae, latents, p)
    threshold = top_values.min(dim=0).values  # the weakest top token: iw samples stay below it
    gen = torch.Generator().manual_seed(p.random_seed)
    n_rand = p.n_random_ex_for_scoring * NEGATIVE_DRAWS
    rand_rows = torch.randint(0, n_ctx, (n_rand, n), generator=gen)
    rand_cols = torch.randint(b, length - b, (n_rand, n), generator=gen)
    top_acts = torch.zeros(*top_rows.shape, 2 * b + 1)
    rand_acts = torch.zeros(*rand_rows.shape, 2 * b + 1)
    reservoir = None
    below = torch.zeros(n)
    k_iw = p.n_iw_sampled_ex
    for row0, lat in encoded_batches(prepared, sae, p.sae_batch_size):
        lat = lat[:, :, latents]
        for rows, cols, out in ((top_rows, top_cols, top_acts), (rand_rows, rand_cols, rand_acts)):
            here = (rows >= row0) & (rows < row0 + len(lat))
            if here.any():
                k_idx, j_idx = here.nonzero(as_tuple=True)
                out[k_idx, j_idx] = _windows(lat, (rows[here] - row0)[:, None], cols[here][:, None], b, j_idx[:, None])[:, 0]
        if k_iw == 0:
            continue
        flat = _inner(lat, b)
        flat = torch.where(flat >= threshold, 0.0, flat)
        below = torch.maximum(below, flat.max(dim=0).values)
        weights = flat.pow(2)
        u = torch.rand(weights.shape, generator=gen).clamp_min(1e-12)
        keys = torch.where(weights > 0, u.log() / weights, torch.tensor(float("-inf")))
        top_keys, idx = keys.topk(min(k_iw, len(keys)), dim=0)
        local_rows, cols = idx // (length - 2 * b), idx % (length - 2 * b) + b
        windows = _windows(lat, local_rows, cols, b)
        reservoir = _merge(reservoir, (top_keys, local_rows + row0, cols, windows), k_iw)
    out: dict[int, LatentContexts] = {}
    for j, latent in enumerate(latents):
        top = sorted(
            (Window(int(r), int(c), _tok_window(tokens, int(r), int(c), b), top_acts[i, j].tolist(), "top")
             for i, (r, c) in enumerate(zip(top_rows[:, j], top_cols[:, j]))),
            key=lambda w: max(w.acts), reverse=True,
        )  # fmt: skip
        iw: list[Window] = []
        if k_iw:
            assert reservoir is not None
            keys, rows, cols, windows = reservoir
            if below[j] < 1e-6 or not torch.isfinite(keys[:, j]).all():
                continue
            iw = [Window(int(rows[i, j]), int(cols[i, j]), _tok_window(tokens, int(rows[i, j]), int(cols[i, j]), b),
                         windows[i, j].tolist(), "iw") for i in range(k_iw)]  # fmt: skip
        rand = [Window(int(rand_rows[i, j]), int(rand_cols[i, j]),
                       _tok_window(tokens, int(rand_rows[i, j]), int(rand_cols[i, j]), b), rand_acts[i, j].tolist(), "random")
                for i in range(n_rand)]  # fmt: skip
        threshold_j = p.act_threshold_frac * max(max(w.acts) for w in top)
        negatives = [w for w in rand if max(w.acts) <= threshold_j][: p.n_random_ex_for_scoring]
        out[latent] = LatentContexts(latent, top, iw, rand[: p.n_random_ex_for_scoring], negatives, threshold_j)
    return out


def _tok_window(tokens: torch.Tensor, row: int, col: int, b: int) -> list[int]:
    return tokens[row, col - b : col + b + 1].tolist()


def split_examples(ctx: LatentContexts, p: AutointerpConfig) -> tuple[list[Window], list[Window]]:
    """SAEBench's split: a random ``n_top_ex_for_generation`` of the top windows and of the iw windows
    explain, the rest plus the random windows score. Generation sorted by peak activation, scoring
    shuffled. Seeded per latent, so the split never depends on which latents ran first."""
    rng = random.Random(f"{p.random_seed}:{ctx.latent}:split")
    top = rng.sample(ctx.top, len(ctx.top))
    iw = rng.sample(ctx.iw, len(ctx.iw))
    generation = sorted(top[: p.n_top_ex_for_generation] + iw[: p.n_iw_sampled_ex_for_generation],
                        key=lambda w: max(w.acts), reverse=True)  # fmt: skip
    scoring = top[p.n_top_ex_for_generation :] + iw[p.n_iw_sampled_ex_for_generation :] + ctx.random
    rng.shuffle(scoring)
    return generation, scoring
