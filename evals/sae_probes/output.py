"""SAEBench's sae-probes schema and what the report takes from it.

The output class is sae-bench's ``SparseProbingSaeProbesEvalOutput``; it is imported where it is built
(``evaluate.py``) because its module pulls in torch, and this one is read by the config loader.
"""

from __future__ import annotations

from typing import Any

from pipeline.kinds import Metric, Reported

RESULT_FILE = "sae_probes.json"


def extract(result: dict[str, Any]) -> dict[str, float]:
    m = result["eval_result_metrics"]
    out = {"saeprobes_llm_acc": m["llm"]["llm_test_accuracy"]}
    for key, value in m["sae"].items():
        if key.startswith("sae_top_") and key.endswith("_test_accuracy") and value is not None:
            out[f"saeprobes_top{key.removeprefix('sae_top_').removesuffix('_test_accuracy')}_acc"] = value
    return out


REPORTED = Reported(
    "Sparse probing, sae-probes benchmark (last token, tuned logistic probes)",
    RESULT_FILE,
    extract,
    {"saeprobes_llm_acc": Metric(None), "saeprobes_top1_acc": Metric("higher", headline=True), "saeprobes_top*_acc": Metric("higher")},
)
