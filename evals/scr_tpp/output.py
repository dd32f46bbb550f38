"""SCR's and TPP's results in SAEBench's schemas (sae-bench's own output classes), and what the report
takes from them.

sae-bench is imported inside the functions that build the output: the plan reads the ``*_REPORTED`` from
this module and must not pay for (or need) sae-bench."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from evals.common import saebench_output
from evals.scr_tpp.config import SCHEMA_N_VALUES, ScrTppParams
from pipeline.kinds import Metric, Reported

if TYPE_CHECKING:
    from sae_bench.evals.scr_and_tpp.eval_config import ScrAndTppEvalConfig
    from sae_bench.evals.scr_and_tpp.eval_output import ScrEvalOutput, TppEvalOutput

    from evals.contract import EvalEnv

SCR_RESULT_FILE = "scr.json"
TPP_RESULT_FILE = "tpp.json"


def eval_config(env: EvalEnv, params: ScrTppParams, perform_scr: bool) -> ScrAndTppEvalConfig:
    """SAEBench's config object, filled from ours (it goes into the JSON)."""
    from sae_bench.evals.scr_and_tpp.eval_config import ScrAndTppEvalConfig

    return ScrAndTppEvalConfig(
        random_seed=params.random_seed,
        dataset_names=list(params.dataset_names),
        perform_scr=perform_scr,
        early_stopping_patience=params.early_stopping_patience,
        train_set_size=params.train_set_size,
        test_set_size=params.test_set_size,
        context_length=params.context_length,
        probe_train_batch_size=params.probe_train_batch_size,
        probe_test_batch_size=params.probe_test_batch_size,
        probe_epochs=params.probe_epochs,
        probe_lr=params.probe_lr,
        probe_l1_penalty=params.probe_l1_penalty,
        sae_batch_size=params.sae_batch_size,
        llm_batch_size=params.llm_batch_size,
        llm_dtype=env.model_spec.dtype,
        lower_vram_usage=False,
        model_name=env.model_spec.name,
        n_values=list(params.n_values),
        column1_vals_lookup={
            k: [tuple(p) for p in v] for k, v in params.column1_vals_lookup.items() if k in params.dataset_names
        },
    )



def schema(kind: Literal["scr", "tpp"]) -> tuple[type, Callable[[dict[str, float]], Any], type]:
    """sae-bench's output class for ``kind``, its metrics from the averaged results, its per-run detail class."""
    from sae_bench.evals.scr_and_tpp import eval_output as o

    if kind == "scr":
        return o.ScrEvalOutput, lambda m: o.ScrMetricCategories(scr_metrics=o.ScrMetrics(**m)), o.ScrResultDetail
    return o.TppEvalOutput, lambda m: o.TppMetricCategories(tpp_metrics=o.TppMetrics(**m)), o.TppResultDetail


def build_output(
    kind: Literal["scr", "tpp"], env: EvalEnv, params: ScrTppParams, sae: Any, averaged: dict[str, float],
    results: dict[str, dict[str, float]], unstructured: dict[str, Any],
) -> ScrEvalOutput | TppEvalOutput:  # fmt: skip
    """SAEBench's output object: the runs' average as the metrics, each run (``{name}_results``) as a detail."""
    output_class, metrics, detail = schema(kind)
    return saebench_output(
        output_class, eval_config(env, params, perform_scr=kind == "scr"), sae, env,
        eval_result_metrics=metrics(averaged),
        eval_result_details=[detail(dataset_name=k, **v) for k, v in results.items()],
        eval_result_unstructured=unstructured,
    )  # fmt: skip


def _thresholded(metrics: dict[str, Any], template: str, name: str) -> dict[str, float]:
    """'scr_metric_threshold_{n}' -> 'scr@n' for every n SAEBench filled in."""
    out = {}
    for n in SCHEMA_N_VALUES:
        value = metrics.get(template.format(n=n))
        if value is not None:
            out[f"{name}@{n}"] = value
    return out


def scr_extract(result: dict[str, Any]) -> dict[str, float]:
    return _thresholded(result["eval_result_metrics"]["scr_metrics"], "scr_metric_threshold_{n}", "scr")


def tpp_extract(result: dict[str, Any]) -> dict[str, float]:
    return _thresholded(result["eval_result_metrics"]["tpp_metrics"], "tpp_threshold_{n}_total_metric", "tpp")


SCR_REPORTED = Reported(
    "SCR: spurious correlation removal", SCR_RESULT_FILE, scr_extract,
    {"scr@20": Metric("higher", headline=True), "scr@*": Metric("higher")},
)  # fmt: skip
TPP_REPORTED = Reported(
    "TPP: targeted probe perturbation", TPP_RESULT_FILE, tpp_extract,
    {"tpp@20": Metric("higher", headline=True), "tpp@*": Metric("higher")},
)  # fmt: skip
