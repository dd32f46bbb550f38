"""SCR's and TPP's probes on the model's own pooled activations (sae-bench's trainer, seeded, in SAEBench's
order of calls), and the test sets they are scored on, stored as row ids."""

from __future__ import annotations

import torch
from sae_bench.evals.sparse_probing import probe_training

from evals.common import quiet
from evals.scr_tpp.config import ScrTppParams
from evals.scr_tpp.data import SCR_KEYS, Run


def unique_rows(splits: list[dict[str, list[str]]]) -> tuple[list[str], list[dict[str, torch.Tensor]]]:
    """The distinct texts of several class dicts, and each dict as class -> row ids, shaped [n, 1] as
    float so sae-bench's ``prepare_probe_data`` (which wants activations) can draw rows from them."""
    rows: dict[str, int] = {}
    ids = []
    for split in splits:
        ids.append({c: torch.tensor([[float(rows.setdefault(t, len(rows)))] for t in v]) for c, v in split.items()})
    return list(rows), ids


def draw(ids: dict[str, torch.Tensor], key: str, scr: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One of SAEBench's ``prepare_probe_data`` draws (positives, negatives, shuffle), as row ids."""
    rows, labels = probe_training.prepare_probe_data(ids, key, scr)
    return rows[:, 0].long(), labels


class IndexSets:
    """Named (rows, labels) sets, stored as two concatenated tensors plus offsets in meta."""

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.spans: dict[str, list[int]] = {}
        self.size = 0

    def add(self, name: str, rows: torch.Tensor, labels: torch.Tensor) -> None:
        self.rows.append(rows)
        self.labels.append(labels.to(torch.int32))
        self.spans[name] = [self.size, self.size + len(rows)]
        self.size += len(rows)


RowIds = dict[str, torch.Tensor]
"""class key -> row ids [n, 1] (float, see ``unique_rows``)."""


def probe_run(
    run: Run, ids_tr: RowIds, ids_te: RowIds, pooled_tr: torch.Tensor, pooled_te: torch.Tensor, params: ScrTppParams
) -> tuple[dict[str, probe_training.Probe], dict[str, float], IndexSets]:
    """SAEBench's model-side sequence for one run, seeded, same calls in the same order so the same draws:
    ``train_probe_on_activations`` (one probe per class key, SAEBench's torch probe), the clean
    ``get_probe_test_accuracy`` (its test draws are kept: every ablation is scored on them), then the
    node-effect draws of ``get_all_node_effects_for_one_sae`` (kept: latent attribution uses them)."""
    scr = run.kind == "scr"
    sets = IndexSets()
    probes: dict[str, probe_training.Probe] = {}
    torch.manual_seed(params.random_seed)
    with torch.enable_grad():
        for key in ids_tr:
            (tr, y_tr), (te, y_te) = draw(ids_tr, key, scr), draw(ids_te, key, scr)
            probes[key], _ = quiet(
                probe_training.train_probe_gpu, pooled_tr[tr], y_tr, pooled_te[te], y_te, dim=pooled_tr.shape[1],
                batch_size=params.probe_train_batch_size, epochs=params.probe_epochs, lr=params.probe_lr,
                early_stopping_patience=params.early_stopping_patience, l1_penalty=params.probe_l1_penalty,
            )  # fmt: skip
    clean: dict[str, float] = {}
    for key in run.chosen:
        rows, labels = draw(ids_te, key, scr)
        sets.add(f"test:{key}", rows, labels)
        clean[key] = probe_accuracy(probes[key], pooled_te[rows], labels, params.probe_test_batch_size)
    if scr:  # get_scr_probe_test_accuracy: each SCR probe on the other two probes' data
        for data_key in run.chosen:
            rows, labels = draw(ids_te, data_key, True)
            for probe_key in (k for k in SCR_KEYS if k != data_key):
                acc = probe_accuracy(probes[probe_key], pooled_te[rows], labels, params.probe_test_batch_size)
                clean[f"{probe_key} probe on {data_key} data"] = acc
    for key in run.chosen:
        sets.add(f"effect:{key}", *draw(ids_tr, key, scr))
    return {k: probes[k] for k in run.chosen}, clean, sets


def probe_accuracy(probe: probe_training.Probe, acts: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    return float(probe_training.test_probe_gpu(acts, labels.to(torch.int), batch_size, probe))


def probe_from(w_D: torch.Tensor, b: torch.Tensor) -> probe_training.Probe:
    """A sae-bench ``Probe`` holding stored weights (built without touching the global RNG)."""
    with torch.random.fork_rng(devices=[]):
        probe = probe_training.Probe(len(w_D), w_D.dtype)
    with torch.no_grad():
        probe.net.weight.copy_(w_D[None])
        probe.net.bias.copy_(b.reshape(1))
    return probe
