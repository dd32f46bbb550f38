"""What ``prepare`` stores for ``evaluate``: the tensor names, the writer of the kept questions, and their
read side."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from evals.contract import Prepared, TensorSink
from evals.unlearning.forward import Ran
from evals.unlearning.prompts import Prompt

MCQ_HEAD = "mcq/head_acts"
"""[head, d_model]: hook activations of the token prefix all prompts share."""
MCQ_ACTS = "mcq/acts"
"""[rows, d_model]: per kept question, hook activations of its own tokens then of each continuation."""
MCQ_TOKENS = "mcq/tokens"
"""[rows] int64: the token id of each row of mcq/acts."""
MCQ_INDEX = "mcq/index"
"""[kept, 8] int64 per kept question: row offset, own length, 4 continuation lengths, dataset, answer."""
CORPUS_ACTS = {"forget": "corpus/forget_acts", "retain": "corpus/retain_acts"}
"""[tokens, d_model]: hook activations of the corpus tokens that count (BOS/EOS/pad left out)."""


class QuestionStore:
    """Writes kept questions' hook activations, tokens and index rows to the sink."""

    def __init__(self, sink: TensorSink):
        self.sink, self.offset = sink, 0

    def add(self, q: Prompt, ran: Ran, h: int, dataset: int) -> None:
        assert ran.own_acts is not None
        rows = [ran.own_acts]
        if q.choices:
            assert ran.conts_acts is not None
            rows += [ran.conts_acts[j, : len(c)] for j, c in enumerate(q.choices)]
        ids = q.tokens[h:] + [t for c in q.choices for t in c]
        self.sink.append(MCQ_ACTS, torch.cat(rows))
        self.sink.append(MCQ_TOKENS, torch.tensor(ids, dtype=torch.long))
        lengths = [len(c) for c in q.choices] or [0, 0, 0, 0]
        index = [self.offset, len(q.tokens) - h, *lengths, dataset, q.answer]
        self.sink.append(MCQ_INDEX, torch.tensor([index], dtype=torch.long))
        self.offset += len(ids)


@dataclass(frozen=True)
class KeptQuestion:
    acts: torch.Tensor
    """Hook activations: own tokens, then each continuation."""
    own: int
    choices: list[list[int]]
    dataset: int
    answer: int


def kept_questions(prepared: Prepared) -> list[KeptQuestion]:
    """The kept questions as ``prepare`` stored them (small: a few dozen rows each)."""
    acts, tokens = prepared.tensor(MCQ_ACTS), prepared.tensor(MCQ_TOKENS).tolist()
    out = []
    for offset, own, *rest in prepared.tensor(MCQ_INDEX).tolist():
        lengths, dataset, answer = [n for n in rest[:4] if n], rest[4], rest[5]
        ends = list(itertools.accumulate(lengths, initial=offset + own))
        choices = [tokens[a:b] for a, b in itertools.pairwise(ends)]
        out.append(KeptQuestion(acts[offset : ends[-1]], own, choices, dataset, answer))
    return out
