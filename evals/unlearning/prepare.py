"""Unlearning's SAE-independent half: which questions the unmodified model answers correctly, the hook
activations of those questions, and the hook activations of the forget and retain corpora."""

from __future__ import annotations

from typing import Any

import torch
from sae_bench.evals.unlearning.utils.metrics import all_permutations

from evals.contract import EvalEnv, TensorSink
from evals.unlearning.config import UnlearningParams
from evals.unlearning.corpus import corpus_tokens, store_corpus
from evals.unlearning.data import MCQSet, load_data
from evals.unlearning.forward import (
    Ran,
    new_cache,
    pad_rows,
    run_piece,
    run_prompt,
    start_layer,
)
from evals.unlearning.prompts import Prompt, answer_token_ids, build_prompt, shared_head
from evals.unlearning.scoring import choice_scores
from evals.unlearning.stored import MCQ_HEAD, QuestionStore
from pipeline.models.read_layout import weights_stored_as_read


def _own_and_conts(q: Prompt, h: int, device: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    own = torch.tensor(q.tokens[h:], device=device)[None]
    conts = pad_rows([torch.tensor(c, device=device) for c in q.choices]) if q.choices else None
    return own, conts


def keep_correct(env: EvalEnv, model: Any, tokenizer: Any, sets: list[MCQSet], p: UnlearningParams,
                 sink: TensorSink) -> tuple[int, dict[str, list[int]]]:  # fmt: skip
    """Run every question on the unmodified model; store the shared head's and the kept questions' hook
    activations. Kept means SAEBench's "correct": right under every ordering of the choices (letter: all
    24, stopping at the first miss; cloze: the order plays no part, one run). Returns the head length and
    the kept question ids per set."""
    hook, device = env.model_spec.hook, model.cfg.device
    answer_ids = answer_token_ids(tokenizer) if p.scoring == "letter" else None
    perms = list(all_permutations) if p.scoring == "letter" else [(0, 1, 2, 3)]

    every = (build_prompt(tokenizer, row, s.pre_question, p.scoring, env.prepend_bos, perm)
             for s in sets for row in s.rows for perm in perms)  # fmt: skip
    h = shared_head(every)  # streamed: 24 orderings of all of WMDP is a lot of lists
    head = new_cache(model)
    if h:
        first = build_prompt(tokenizer, sets[0].rows[0], sets[0].pre_question, p.scoring, env.prepend_bos)
        head_tokens = first.tokens[:h]
        _, acts = run_piece(model, torch.tensor(head_tokens, device=device)[None], head, 0, hook)
        assert acts is not None
        sink.put(MCQ_HEAD, acts[0])
    store = QuestionStore(sink)
    kept: dict[str, list[int]] = {s.name: [] for s in sets}
    total = sum(len(s.rows) for s in sets)
    with env.reporter.bar("unlearning: questions the model gets right", total=total, unit="question") as bar:
        for d, mcq in enumerate(sets):
            for i, row in enumerate(mcq.rows):
                ran0: tuple[Prompt, Ran] | None = None
                for perm in perms:  # stops at the first ordering answered wrong
                    q = build_prompt(tokenizer, row, mcq.pre_question, p.scoring, env.prepend_bos, perm)
                    ran = run_prompt(model, head, *_own_and_conts(q, h, device), 0, hook if ran0 is None else None)
                    ran0 = ran0 or (q, ran)
                    if int(choice_scores(model, ran, q.choices, answer_ids).argmax()) != q.answer:
                        break
                else:
                    assert ran0 is not None
                    store.add(*ran0, h, d)
                    kept[mcq.name].append(i)
                bar.advance(1)
            bar.advance(0, extra=f"{mcq.name}: {len(kept[mcq.name])}/{len(mcq.rows)} kept")
    return h, kept


def prepare(env: EvalEnv, p: UnlearningParams, sink: TensorSink) -> dict[str, Any]:
    """The SAE-independent work: which questions the unmodified model answers correctly, the hook
    activations of those questions, and the hook activations of the forget and retain corpora."""
    spec = env.model_spec
    first_block = start_layer(spec.hook, spec.layer)  # fails fast on an unsupported hook
    data = load_data(p)
    model, tokenizer = env.model()
    sets = [data.forget, *data.retain]
    with torch.no_grad(), weights_stored_as_read(model):
        h, kept = keep_correct(env, model, tokenizer, sets, p, sink)
    counts = {s.name: {"questions": len(s.rows), "kept": len(kept[s.name])} for s in sets}
    if not kept[data.forget.name] or not any(kept[s.name] for s in data.retain):
        hint = "; letter scoring needs a model that answers by letter (try scoring: cloze)"
        raise ValueError(
            f"evals.unlearning: the model answers too few questions correctly to measure anything: {counts}"
            + (hint if p.scoring == "letter" else "")
        )
    rows: dict[str, int] = {}
    counted: dict[str, int] = {}
    for name, docs, sample in (("forget", data.forget_docs, True), ("retain", data.retain_docs, False)):
        tokens = corpus_tokens(tokenizer, docs, p, sample)
        rows[name] = len(tokens)
        counted[name] = store_corpus(env, model, tokenizer, name, tokens, p, sink)
    return {
        "data_source": data.source,
        "forget": data.forget.name,
        "retain": [s.name for s in data.retain],
        "questions": counts,
        "kept_question_ids": kept,
        "scoring": p.scoring,
        "head_length": h,
        "corpus_rows": rows,
        "corpus_tokens_counted": counted,
        "hook": spec.hook,
        "first_block_after_hook": first_block,
    }
