"""A saved sae-lens synthetic model (a `SyntheticModel.save` folder) as a plan input: its content digest.

Torch-free, so the plan can key a `synthetic_model` stage on what the folder holds (edit the saved model
and everything downstream is redone; move it and nothing is).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def saved_digest(folder: Path) -> str:
    """sha256 over the folder's files (relative names and bytes, in name order)."""
    if not folder.is_dir():
        raise ValueError(f"synthetic.saved: {folder} is not a folder (expected what SyntheticModel.save writes)")
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
    return h.hexdigest()
