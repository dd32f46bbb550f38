"""Facts that config validation needs without loading a model, a corpus or torch."""

from __future__ import annotations

# (source, name) -> (n_layers, d_model, d_vocab)
KNOWN_MODELS: dict[tuple[str, str], tuple[int, int, int]] = {
    ("smollm2_gguf", "SmolLM2-135M-Instruct"): (30, 576, 49152),
    ("hub", "google/gemma-2-2b"): (26, 2304, 256000),
    ("hub", "google/gemma-2-2b-it"): (26, 2304, 256000),
    ("hub", "gemma-2-2b"): (26, 2304, 256000),
    ("hub", "google/gemma-2-9b"): (42, 3584, 256000),
    ("hub", "gpt2"): (12, 768, 50257),
}


def _facts(source: str, name: str) -> tuple[int, int, int] | None:
    # The GGUF source ships one model, whatever the config calls it.
    return KNOWN_MODELS.get((source, "SmolLM2-135M-Instruct" if source == "smollm2_gguf" else name))


def known_n_layers(source: str, name: str) -> int | None:
    facts = _facts(source, name)
    return facts[0] if facts else None


def known_d_model(source: str, name: str) -> int | None:
    facts = _facts(source, name)
    return facts[1] if facts else None


def known_d_vocab(source: str, name: str) -> int | None:
    facts = _facts(source, name)
    return facts[2] if facts else None


SHIPPED_CORPORA: tuple[str, ...] = ("rotten_tomatoes", "political_speeches")
"""Text corpora that ship inside installed packages (``pipeline.data.corpora`` reads them)."""
