"""One clamp setting's answers, computing only what SAEBench's score reads.

Per setting SAEBench runs the model on every kept question with the clamp. Three shortcuts leave the score
unchanged and skip most of that work; ``full_sweep: true`` turns them off:

- **Untouched questions.** Where no selected latent is active (> 0) at any position of a question, nor of
  the shared head, SAEBench's hook returns ``resid - decode(f) + decode(f)``: the residual itself up to
  float rounding. Such a question gets the unmodified model's answer, which for a kept question is right.
- **Retain first, stop at the bar.** The score reads a setting's forget accuracy only if its pooled retain
  accuracy stays >= the bar (0.99). Retain questions are asked first; once so many are wrong that the bar
  is out of reach, the setting stops. Its retain accuracy is then recorded as that upper bound (below the
  bar, so the score rule drops the setting as it would with the exact value) and its forget accuracy is
  not computed.
- **Suspects first.** The stop comes at a fixed count of wrong retain answers, whatever their order, so the
  order changes how soon a setting stops and nothing else. The retain questions an earlier setting got
  wrong go first, in a run of their own: the settings clamp overlapping latents, and a question one
  of them breaks is often broken by the next (on one of the benchmark's SAEs, 2 of the 3 later settings
  then stopped after 1–2 questions instead of 16–48).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from evals.unlearning.clamp import answers_with_clamp, clamped_head
from evals.unlearning.stored import KeptQuestion


@dataclass(frozen=True)
class Reach:
    """Which of some latents are active (> 0) anywhere in each kept question and in the shared head,
    at the positions SAEBench's clamp can change (all but the sequence's position 0)."""

    column: dict[int, int]
    """Latent id -> column of ``questions`` / ``head``."""
    questions: np.ndarray
    """[kept questions, latents] bool."""
    head: np.ndarray
    """[latents] bool (all False without a head)."""

    def touched(self, features: list[int]) -> np.ndarray:
        """Per question: whether clamping ``features`` can change its answer."""
        cols = [self.column[f] for f in features]
        if self.head[cols].any():  # a changed head changes every question after it
            return np.ones(len(self.questions), dtype=bool)
        return self.questions[:, cols].any(axis=1)


@torch.no_grad()
def reach(sae: Any, head_acts: torch.Tensor | None, qs: list[KeptQuestion], latents: list[int],
          device: str, dtype: torch.dtype) -> Reach:  # fmt: skip
    """Encode each question's (and the head's) stored hook activations once, keeping only ``latents``."""
    column = {f: i for i, f in enumerate(latents)}

    def active(rows: torch.Tensor, has_position_0: bool) -> np.ndarray:
        codes = sae.encode(rows.to(device, dtype)[None])[0][int(has_position_0) :, latents]
        return (codes > 0).any(dim=0).cpu().numpy()

    head = active(head_acts, True) if head_acts is not None else np.zeros(len(latents), dtype=bool)
    first_has_0 = head_acts is None  # without a head, each question starts its sequence
    questions = np.stack([active(q.acts, first_has_0) for q in qs]) if qs else np.zeros((0, len(latents)), bool)
    return Reach(column, questions, head)


@dataclass
class SettingAnswers:
    """A setting's answers: per kept question right / wrong, or None where the setting stopped first."""

    correct: list[bool | None]
    run: int
    """Questions answered, in order (a setting that stopped ran the rest of its last batch unread)."""
    stopped: bool = False
    retain_at_most: float | None = None
    """When stopped: the pooled retain accuracy's upper bound (already below the bar)."""


QUESTIONS_PER_RUN = 16
"""Questions batched into one model run (``forward.run_prompts``). A setting that stops at the retain bar
reads its answers in order and ignores the rest of its last batch, so the score does not depend on it."""


def batches(suspects: list[int], rest: list[int]) -> list[list[int]]:
    """The runs of a setting: the suspects on their own (so a setting they stop costs only them), then
    the rest ``QUESTIONS_PER_RUN`` at a time."""
    runs = [suspects[i : i + QUESTIONS_PER_RUN] for i in range(0, len(suspects), QUESTIONS_PER_RUN)]
    return runs + [rest[i : i + QUESTIONS_PER_RUN] for i in range(0, len(rest), QUESTIONS_PER_RUN)]


def answer_setting(
    model: Any, sae: Any, head_acts: torch.Tensor | None, qs: list[KeptQuestion], features: list[int],
    multiplier: int, first_block: int, answer_ids: torch.Tensor | None, touched: np.ndarray | None, bar: float,
    suspects: Sequence[int] = (),
) -> SettingAnswers:  # fmt: skip
    """Answer the setting's questions, retain first, ``suspects`` (retain questions an earlier setting got
    wrong) before the other retain questions. ``touched`` None: every question runs in plain order and
    nothing stops (SAEBench's full sweep)."""
    full = touched is None
    correct: list[bool | None] = [None if full or touched[i] else True for i in range(len(qs))]
    retain = [i for i, q in enumerate(qs) if q.dataset > 0]
    first = [] if full else list(dict.fromkeys(i for i in suspects if qs[i].dataset > 0 and correct[i] is None))
    rest = [i for i in [*retain, *(i for i, q in enumerate(qs) if q.dataset == 0)] if correct[i] is None and i not in first]
    if not first and not rest:
        return SettingAnswers(correct, 0)
    head = clamped_head(model, sae, head_acts, features, multiplier, first_block)
    wrong, start = 0, 0
    for batch in batches(first, rest):
        answers = answers_with_clamp(model, sae, head, [qs[i] for i in batch], features, multiplier, first_block,
                                     answer_ids, has_position_0=head_acts is None)  # fmt: skip
        for n_run, (i, ok) in enumerate(zip(batch, answers, strict=True), start=start + 1):
            correct[i] = ok
            if qs[i].dataset > 0 and not ok:
                wrong += 1
                at_most = (len(retain) - wrong) / len(retain)
                if not full and at_most < bar:
                    return SettingAnswers([c if qs[j].dataset > 0 else None for j, c in enumerate(correct)], n_run,
                                          stopped=True, retain_at_most=at_most)  # fmt: skip
        start += len(batch)
    return SettingAnswers(correct, start)
