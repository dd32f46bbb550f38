"""The report's autointerp examples: per SAE, a few latents of each feature tier with their explanation and
top contexts, the max-activating token highlighted.

Contexts are model tokens: any of them may hold ``<``, ``&``, ``|``, ``*`` or a newline, so every token is
escaped for the format it lands in (HTML entities; Markdown backslashes) before the highlight is added.
A result from before contexts were stored as tokens (a plain string each) is shown escaped as it is.
"""

from __future__ import annotations

import html
import re
from typing import Any

MD_SPECIAL = re.compile(r"([\\`*_\[\]{}()#+\-.!|~<>&])")


def of_result(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The autointerp result's example latents per tier ({} when it has none)."""
    return ((result.get("eval_result_unstructured") or {}).get("saepipe") or {}).get("tier_examples") or {}


def _visible(token: str) -> str:
    return token.replace("\n", "↵").replace("�", "")


def max_at(context: dict[str, Any]) -> int:
    """Index of the context's max-activating token (the first, on a tie)."""
    acts = context["acts"]
    return max(range(len(acts)), key=lambda i: acts[i])


def context_html(context: dict[str, Any] | str) -> str:
    if isinstance(context, str):
        return html.escape(context)
    top = max_at(context)
    parts = []
    for i, (token, act) in enumerate(zip(context["tokens"], context["acts"])):
        text = html.escape(_visible(token))
        parts.append(f'<mark title="{act:.3g}">{text}</mark>' if i == top else text)
    return "".join(parts)


def context_md(context: dict[str, Any] | str) -> str:
    if isinstance(context, str):
        return MD_SPECIAL.sub(r"\\\1", _visible(context))
    top = max_at(context)
    parts = []
    for i, token in enumerate(context["tokens"]):
        text = MD_SPECIAL.sub(r"\\\1", _visible(token))
        parts.append(f"**⟦{text}⟧**" if i == top else text)  # the brackets keep a whitespace token visible
    return "".join(parts)


def _head(ex: dict[str, Any]) -> str:
    corr = ex.get("correlation") or {}
    scores = ", ".join(f"{k} {v:.2f}" for k, v in corr.items() if isinstance(v, float))
    return f"latent {ex['latent']}" + (f" (correlation {scores})" if scores else "")


def markdown(examples: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """One block per SAE: each tier's example latents, explanation quoted, contexts as a list."""
    if not any(any(v) for v in examples.values()):
        return []
    lines = ["## Autointerp: example latents per tier", "",
             "Each latent's top-activating contexts; ⟦bold⟧: the token where the latent's activation peaks.", ""]  # fmt: skip
    for sae_id, tiers in sorted(examples.items()):
        lines += [f"### {sae_id}", ""]
        for tier, latents in tiers.items():
            for ex in latents:
                explanation = MD_SPECIAL.sub(r"\\\1", _visible(str(ex.get("explanation", ""))))
                lines.append(f"- **{tier}**, {_head(ex)}: “{explanation}”")
                lines += [f"  - {context_md(c)}" for c in ex.get("top_contexts", [])]
        lines.append("")
    return lines


def section_html(examples: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    if not any(any(v) for v in examples.values()):
        return ""
    parts = [('<h2>Autointerp: example latents per tier</h2><p class="note">Each latent\'s top-activating contexts; '
              "highlighted: the token where its activation peaks (hover for the value).</p>")]  # fmt: skip
    for sae_id, tiers in sorted(examples.items()):
        parts.append(f"<h3>{html.escape(sae_id)}</h3>")
        for tier, latents in tiers.items():
            for ex in latents:
                contexts = "".join(f"<li><code>{context_html(c)}</code></li>" for c in ex.get("top_contexts", []))
                parts.append(f'<div class="example"><b>{html.escape(tier)}</b>, {html.escape(_head(ex))}: '
                             f"“{html.escape(_visible(str(ex.get('explanation', ''))))}”<ul>{contexts}</ul></div>")  # fmt: skip
    return "".join(parts)
