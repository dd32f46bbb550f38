"""sae-bench's absorption trainers, silenced: their tqdm bars cannot be switched off, and sklearn warns."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sae_bench.evals.absorption import k_sparse_probing as ksp
from sae_bench.evals.absorption import probing

from evals.common import silenced


@contextlib.contextmanager
def quiet_saebench() -> Iterator[None]:
    """sae-bench's probe trainers open tqdm bars (not switchable) and sklearn warns about convergence;
    silence them for the call without touching stderr, where our own progress display lives."""
    orig = {mod: mod.tqdm for mod in (ksp, probing)}

    def silent(*args: Any, **kwargs: Any) -> Any:
        kwargs["disable"] = True
        return orig[ksp](*args, **kwargs)

    try:
        for mod in orig:
            mod.tqdm = silent  # type: ignore[attr-defined]
        with silenced(stdout=False, stderr=False):
            yield
    finally:
        for mod, fn in orig.items():
            mod.tqdm = fn  # type: ignore[attr-defined]
