"""Model weights stored in the layout TransformerLens reads them in, for runs that call the model many
times on few tokens (the per-SAE evals' tails)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# How TransformerLens reads each weight on every call, as the permutation that must be contiguous for
# its rearrange (or ``.T.contiguous()``) to be a view instead of a copy: MLP ``F.linear(x, W.T.contiguous())``;
# attention Q/K/V ``rearrange(W, "h m d -> (h d) m")``; attention out ``rearrange(W_O, "h d m -> m (h d)")``.
_READ_AS = {
    "mlp": {"W_gate": (1, 0), "W_in": (1, 0), "W_out": (1, 0)},
    "attn": {"W_Q": (0, 2, 1), "W_K": (0, 2, 1), "W_V": (0, 2, 1), "_W_K": (0, 2, 1), "_W_V": (0, 2, 1), "W_O": (2, 0, 1)},
}


@contextmanager
def weights_stored_as_read(model: Any, from_block: int = 0, unembed: bool = False) -> Iterator[None]:
    """TransformerLens lays out each MLP and attention weight on every call before its matmul (a
    transpose or a head rearrange, then ``.contiguous()`` or a reshape): a copy of every weight per call,
    which on CPU costs more than the matmul itself for the few dozen tokens of one piece. Storing each
    weight already in the layout it is read in (same shape, same values, only the strides differ) makes
    that step a view and the matmul identical. The usual layout is restored on exit. Only blocks from
    ``from_block`` on are moved (a run from the hook never reads the others): the move and the restore
    copy each weight once, about 0.01 s a SmolLM2 block here. ``unembed``: also the unembedding, which TransformerLens
    reads as ``F.linear(x, W_U.T.contiguous())`` (a 113 MB copy per call for SmolLM2); off where other
    code multiplies by ``W_U`` directly, whose kernel would then see a transposed operand."""
    moved = []
    targets = [(getattr(block, part, None), names) for block in model.blocks[from_block:] for part, names in _READ_AS.items()]
    if unembed:
        targets.append((model.unembed, {"W_U": (1, 0)}))
    for module, names in targets:
        for name, order in names.items():
            param = module._parameters.get(name) if module is not None else None
            if param is not None and param.dim() == len(order):  # a property (GQA's W_K) is not a parameter
                back = tuple(order.index(i) for i in range(len(order)))
                param.data = param.data.permute(order).contiguous().permute(back)
                moved.append(param)
    try:
        yield
    finally:
        for param in moved:
            param.data = param.data.contiguous()
