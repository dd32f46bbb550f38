"""What the report takes from SAEBench's sparse-probing result. The schema, sae-bench's
``SparseProbingEvalOutput``, is imported where it is built (``evaluate.py``): the plan reads this module."""

from __future__ import annotations

from typing import Any

from pipeline.kinds import Metric, Reported

RESULT_FILE = "sparse_probing.json"


def topk_accuracies(sae: dict[str, Any]) -> dict[int, float]:
    """k -> accuracy of every ``sae_top_{k}_test_accuracy`` SAEBench filled in."""
    found = {}
    for key, value in sae.items():
        if key.startswith("sae_top_") and key.endswith("_test_accuracy") and value is not None:
            found[int(key.removeprefix("sae_top_").removesuffix("_test_accuracy"))] = value
    return dict(sorted(found.items()))


def extract(result: dict[str, Any]) -> dict[str, float]:
    m = result["eval_result_metrics"]
    out = {"probe_llm_acc": m["llm"]["llm_test_accuracy"]}
    if m["sae"].get("sae_test_accuracy") is not None:
        out["probe_sae_all_acc"] = m["sae"]["sae_test_accuracy"]
    out |= {f"probe_sae_top{k}_acc": v for k, v in topk_accuracies(m["sae"]).items()}
    return out


REPORTED = Reported(
    "Sparse probing (SAE latents vs the model's own activations)",
    RESULT_FILE,
    extract,
    {
        "probe_llm_acc": Metric(None),
        "probe_sae_all_acc": Metric("higher"),
        "probe_sae_top1_acc": Metric("higher", headline=True),
        "probe_sae_top*_acc": Metric("higher"),
    },
)
