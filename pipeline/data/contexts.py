"""Cut a document stream into fixed-length token contexts.

Documents are joined with a separator token (BOS, as sae-lens's ActivationsStore does) and every
context starts with BOS when ``prepend_bos``. Deterministic: context i is always the same tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # an annotation only: transformers loads with the model, not with the plan
    from transformers import PreTrainedTokenizerBase


def token_contexts(
    docs: Iterable[str],
    tokenizer: PreTrainedTokenizerBase,
    context_size: int,
    prepend_bos: bool,
) -> Iterator[list[int]]:
    bos = tokenizer.bos_token_id
    if bos is None:
        bos = tokenizer.eos_token_id
    body = context_size - 1 if prepend_bos else context_size
    buf: list[int] = []
    for doc in docs:
        buf.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        buf.append(bos)
        start = 0
        while len(buf) - start >= body:
            chunk = buf[start : start + body]
            start += body
            yield [bos, *chunk] if prepend_bos else chunk
        del buf[:start]
