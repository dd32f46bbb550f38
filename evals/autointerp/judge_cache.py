"""Every judge answer on disk under a content key, so a re-run never pays twice and a run replays offline.

The key hashes what decides the answer: endpoint model, messages, max tokens, temperature, seed. One small
JSON file per answer, written to a temp name and renamed, so a stage killed mid-write (kill -9) leaves
either the whole answer or none, and every answer finished before the kill is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

ENV = "SAEPIPE_JUDGE_CACHE"


def default_folder() -> Path:
    """``$SAEPIPE_JUDGE_CACHE``, else ``judge/`` under saepipe's cache (``$SAEPIPE_CACHE``, ~/.cache/saepipe)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    from pipeline.models.smollm2 import cache_root

    return cache_root() / "judge"


def request_key(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class JudgeCache:
    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder is not None else default_folder()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, ensure_ascii=False))
        os.replace(tmp, path)

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*/*.json")) if self.folder.exists() else 0
