"""Resumable shard writing, shared by every stage that produces activation shards.

Finished shards are listed in ``<work>/done.json`` as each one lands, so a killed stage restarts
after the last whole shard; at the end the shards move into the artifact beside their index.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipeline.data.shards import SHARD_DIR, ShardIndex, ShardInfo
from pipeline.fsutil import atomic_write_json

DONE_FILE = "done.json"


def finished_shards(work: Path) -> list[ShardInfo]:
    """Shards finished before a crash, keeping only a prefix whose files are whole."""
    path = work / DONE_FILE
    if not path.exists():
        return []
    done = []
    for raw in json.loads(path.read_text()):
        info = ShardInfo(**raw)
        f = work / info.file
        if not f.exists() or f.stat().st_size != info.bytes:
            break
        done.append(info)
    return done


def record_finished(work: Path, done: list[ShardInfo]) -> None:
    atomic_write_json(work / DONE_FILE, [vars(s) for s in done])


def publish_shards(work: Path, out: Path, done: list[ShardInfo], **index_fields: Any) -> ShardIndex:
    """Move the finished shards into the artifact's ``shards/`` and write ``shards.json``."""
    (out / SHARD_DIR).mkdir()
    for info in done:
        shutil.move(str(work / info.file), out / SHARD_DIR / info.file)
    index = ShardIndex(shards=done, **index_fields)
    index.save(out)
    return index
