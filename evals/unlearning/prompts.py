"""Each question as token ids, in SAEBench's layout inside the model's own chat template."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sae_bench.evals.unlearning.utils.metrics import convert_wmdp_data_to_prompt
from sae_bench.evals.unlearning.utils.var import GEMMA_INST_FORMAT

from evals.unlearning.config import Scoring

ANSWER_STRINGS = ("A", "B", "C", "D", " A", " B", " C", " D")
"""SAEBench's answer tokens for instruct models; a letter's probability is the max of the two forms."""
GEMMA_HEAD, GEMMA_TAIL = GEMMA_INST_FORMAT.split("{prompt}")
LETTER_CUE = "Answer: ("
CLOZE_CUE = "Answer:"


@dataclass(frozen=True)
class Prompt:
    """One question as token ids: the whole prompt, and for cloze the four answer continuations."""

    tokens: list[int]
    choices: list[list[int]]
    """Empty for letter scoring."""
    answer: int


def chat_wrap(tokenizer: Any, user_content: str, cue: str) -> str:
    """The model's chat template around one user turn, the assistant turn begun with ``cue`` (SAEBench's
    GEMMA_INST_FORMAT is Gemma's template around the same content, followed by "Answer: (")."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("evals.unlearning needs an instruct model whose tokenizer has a chat template")
    turn = [{"role": "user", "content": user_content}]
    return tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False) + cue


def letter_content(row: dict[str, Any], pre_question: str, permutation: Sequence[int]) -> str:
    """SAEBench's user content for a letter question, built by its own ``convert_wmdp_data_to_prompt``."""
    full = convert_wmdp_data_to_prompt(
        row["question"], row["choices"], prompt_format="GEMMA_INST_FORMAT",
        pre_question=pre_question, permute_choices=list(permutation),
    )  # fmt: skip
    head, tail = GEMMA_HEAD, GEMMA_TAIL + LETTER_CUE
    assert full.startswith(head) and full.endswith(tail), "sae-bench's prompt layout changed"
    return full[len(head) : -len(tail)]


def encode(tokenizer: Any, text: str, prepend_bos: bool) -> list[int]:
    """Token ids of a full prompt, with one BOS in front when the template does not start with it."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if prepend_bos and tokenizer.bos_token_id is not None and ids[:1] != [tokenizer.bos_token_id]:
        ids = [tokenizer.bos_token_id, *ids]
    return ids


def build_prompt(
    tokenizer: Any, row: dict[str, Any], pre_question: str, scoring: Scoring, prepend_bos: bool,
    permutation: Sequence[int] = (0, 1, 2, 3),
) -> Prompt:  # fmt: skip
    if scoring == "letter":
        text = chat_wrap(tokenizer, letter_content(row, pre_question, permutation), LETTER_CUE)
        return Prompt(encode(tokenizer, text, prepend_bos), [], list(permutation).index(row["answer"]))
    text = chat_wrap(tokenizer, pre_question + row["question"], CLOZE_CUE)
    choices = [list(tokenizer(" " + str(c), add_special_tokens=False)["input_ids"]) for c in row["choices"]]
    return Prompt(encode(tokenizer, text, prepend_bos), choices, int(row["answer"]))


def answer_token_ids(tokenizer: Any) -> torch.Tensor:
    """Ids of SAEBench's eight answer strings; each must be one token."""
    ids = [tokenizer(s, add_special_tokens=False)["input_ids"] for s in ANSWER_STRINGS]
    if any(len(i) != 1 for i in ids):
        got = dict(zip(ANSWER_STRINGS, ids, strict=True))
        raise ValueError(f"letter scoring needs single-token answers, got {got}")
    return torch.tensor([i[0] for i in ids])


def shared_head(prompts: Iterable[Prompt]) -> int:
    """Length of the token prefix every prompt shares (chat template opening, start of the pre-question),
    leaving each prompt at least one token of its own. It is run once, not once per question."""
    first: list[int] | None = None
    n = 0
    for p in prompts:
        if first is None:
            first, n = p.tokens, len(p.tokens) - 1
        k = 0
        while k < min(n, len(p.tokens) - 1) and p.tokens[k] == first[k]:
            k += 1
        n = k
    return n
