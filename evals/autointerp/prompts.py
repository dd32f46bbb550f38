"""The judge's prompts and the parsers of its answers: SAEBench's (verbatim, so scores are comparable) and
delphi's detection and fuzzing (``delphi/scorers/classifier/prompts``, paraphrased to one batch per call)."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from evals.autointerp.config import AutointerpConfig
from evals.autointerp.contexts import Window

Messages = list[dict[str, str]]

SAEBENCH_EXPLAIN = """We're studying neurons in a neural network. Each neuron activates on some particular word/words/substring/concept in a short document. The activating words in each document are indicated with << ... >>. We will give you a list of documents on which the neuron activates, in order from most strongly activating to least strongly activating. Look at the parts of the document the neuron activates for and summarize in a single sentence what the neuron is activating on. Try not to be overly specific in your explanation. Note that some neurons will activate only on specific words or substrings, but others will activate on most/all words in a sentence provided that sentence contains some particular concept. Your explanation should cover most or all activating words (for example, don't give an explanation which is specific to a single word if all words in a sentence cause the neuron to activate). Pay attention to things like the capitalization and punctuation of the activating words or concepts, if that seems relevant. Keep the explanation as short and simple as possible, limited to 20 words or less. Omit punctuation and formatting. You should avoid giving long lists of words."""
SAEBENCH_DEMOS = """ Some examples: "This neuron activates on the word 'knows' in rhetorical questions", and "This neuron activates on verbs related to decision-making and preferences", and "This neuron activates on the substring 'Ent' at the start of words", and "This neuron activates on text about government economic policy"."""
SAEBENCH_FORM = """Your response should be in the form "This neuron activates on..."."""
SAEBENCH_SCORE = """We're studying neurons in a neural network. Each neuron activates on some particular word/words/substring/concept in a short document. You will be given a short explanation of what this neuron activates for, and then be shown {n} example sequences in random order. You will have to return a comma-separated list of the examples where you think the neuron should activate at least once, on ANY of the words or substrings in the document. For example, your response might look like "{example}". Try not to be overly specific in your interpretation of the explanation. If you think there are no examples where the neuron will activate, you should just respond with "None". You should include nothing else in your response other than comma-separated numbers or the word "None" - this is important."""

DELPHI_DETECTION = """You are an intelligent and meticulous linguistics researcher. You will be given a certain latent of text, such as "male pronouns" or "text with negative sentiment". You will then be given several text examples. Your task is to determine which examples possess the latent. For each example in turn, return 1 if the sentence is correctly labeled or 0 if the tokens are mislabeled. You must return your response in a valid Python list. Do not return anything else besides a Python list."""
DELPHI_FUZZING = """You are an intelligent and meticulous linguistics researcher. You will be given a certain latent of text, such as "male pronouns" or "text with negative sentiment". You will be given a few examples of text that contain this latent. Portions of the sentence which strongly represent this latent are between tokens << and >>. Some examples might be mislabeled. Your task is to determine if every single token within << and >> is correctly labeled. Consider that all provided examples could be correct, none of the examples could be correct, or a mix. An example is only correct if every marked token is representative of the latent. For each example in turn, return 1 if the sentence is correctly labeled or 0 if the tokens are mislabeled. You must return your response in a valid Python list. Do not return anything else besides a Python list."""

SAEBENCH_ANSWER_CHARS = "0123456789, "
"""What a well-formed SAEBench detection answer is made of ('None' aside: an empty answer parses the same)."""
DELPHI_ANSWER_CHARS = "[]01, "
"""What a well-formed delphi answer ('[1, 0, 1]') is made of."""


def example_text(window: Window, str_tokens: dict[str, str], marked: Sequence[bool] | None = None) -> str:
    """SAEBench's ``Example.to_str``: tokens joined, marked ones in << >>, '�' dropped, newlines as '↵'."""
    marks = marked if marked is not None else [False] * len(window.tokens)
    text = "".join(f"<<{str_tokens[str(t)]}>>" if m else str_tokens[str(t)] for t, m in zip(window.tokens, marks))
    return text.replace("�", "").replace("\n", "↵")


def active(window: Window, threshold: float) -> list[bool]:
    return [a > threshold for a in window.acts]


def saebench_explain(generation: Sequence[Window], threshold: float, str_tokens: dict[str, str],
                     p: AutointerpConfig) -> Messages:  # fmt: skip
    """SAEBench's ``get_generation_prompts``: the explainer sees its examples with active tokens marked."""
    lines = "\n".join(f"{i + 1}. {example_text(w, str_tokens, active(w, threshold))}" for i, w in enumerate(generation))
    system = SAEBENCH_EXPLAIN + (SAEBENCH_DEMOS if p.use_demos_in_explanation else SAEBENCH_FORM)
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"The activating documents are given below:\n\n{lines}"}]  # fmt: skip


def saebench_score(explanation: str, scoring: Sequence[Window], str_tokens: dict[str, str], p: AutointerpConfig,
                   rng: random.Random) -> Messages:  # fmt: skip
    """SAEBench's ``get_scoring_prompts``: unmarked examples, the example answer drawn from ``rng``."""
    lines = "\n".join(f"{i + 1}. {example_text(w, str_tokens)}" for i, w in enumerate(scoring))
    example = ", ".join(str(i) for i in sorted(rng.sample(range(1, 1 + p.n_ex_for_scoring), k=p.n_correct_for_scoring)))
    user = f"Here is the explanation: this neuron fires on {explanation}.\n\nHere are the examples:\n\n{lines}"
    return [{"role": "system", "content": SAEBENCH_SCORE.format(n=p.n_ex_for_scoring, example=example)},
            {"role": "user", "content": user}]  # fmt: skip


def parse_explanation(answer: str) -> str:
    """SAEBench's ``parse_explanation``."""
    return answer.split("activates on")[-1].rstrip(".").strip()


def parse_saebench_predictions(answer: str) -> list[int] | None:
    """SAEBench's ``parse_predictions``: 1-based example numbers, [] for 'None', None when unparsable."""
    parts = answer.strip().rstrip(".").replace("and", ",").replace("None", "").split(",")
    items = [i.strip() for i in parts if i.strip() != ""]
    if not items:
        return []
    if not all(i.isdigit() for i in items):
        return None
    return [int(i) for i in items]


def delphi_prompt(system: str, explanation: str, texts: Sequence[str]) -> Messages:
    """delphi's classifier prompt for one batch: the explanation, then 'Example i:' per text."""
    lines = "\n\n".join(f"Example {i}: {t}" for i, t in enumerate(texts))
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"Latent explanation: {explanation}\n\nText examples:\n\n{lines}"}]  # fmt: skip


LIST = re.compile(r"\[([^\[\]]*)\]")


def parse_binary_list(answer: str, n: int) -> list[int] | None:
    """delphi's answer, a Python list of n 0/1 values, read leniently: the first n items of the first bracketed
    list, or of the whole answer when it has none (small judges drop brackets and run on); None otherwise."""
    found = LIST.search(answer)
    items = [x for x in re.split(r"[,\s]+", (found.group(1) if found else answer).strip()) if x][:n]
    if len(items) == n and all(x in ("0", "1") for x in items):
        return [int(x) for x in items]
    return None
