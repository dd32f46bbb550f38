"""Content-addressed artifact folders: ``<root>/<kind>/<key>/`` with a ``manifest.json``.

A stage writes into a staging folder; ``commit`` hashes every file, writes the manifest, fsyncs and
renames the folder into place. So a folder under its final name is complete, and "complete" means
exactly: the manifest is there and every file it lists has its recorded size (cheap, checked at plan
time). Checksums are verified by the readers of big files (shards, weights) as they read, and all at
once by ``verify(full=True)``.

Work that must survive a crash before commit (finished shards, training checkpoints) lives in
``<root>/<kind>/.work/<key>/`` and is removed once the stage commits.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.fsutil import atomic_write_json, fsync_dir, fsync_file

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


_VERIFIED: set[tuple[str, int, int, int, str]] = set()
"""Files this process has checked: (path, inode, size, mtime_ns, sha256). A committed artifact is never
written again, so a file whose stat is unchanged needs no second hash: a grouped eval job reads its prep's
tensors once per SAE, and each SAE need not re-hash gigabytes another one just checked."""


class CorruptArtifactError(RuntimeError):
    """An artifact's files do not match its manifest."""


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("saepipe", "torch", "sae-lens", "sae-bench", "transformer-lens", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


@dataclass(frozen=True)
class ArtifactStore:
    root: Path

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def work_dir(self, kind: str, key: str) -> Path:
        """Persistent scratch space for resumable work; survives crashes, removed on commit."""
        path = self.root / kind / ".work" / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def staging_dir(self, kind: str, key: str) -> Path:
        path = self.root / kind / ".staging" / f"{key}-{os.getpid()}-{time.time_ns()}"
        path.mkdir(parents=True)
        return path

    def manifest(self, kind: str, key: str) -> dict[str, Any]:
        return json.loads((self.path(kind, key) / MANIFEST).read_text())

    def problems(self, kind: str, key: str, full: bool = False) -> list[str]:
        """What is wrong with an artifact ([] = complete). ``full`` also checks every sha256."""
        folder = self.path(kind, key)
        if not (folder / MANIFEST).exists():
            return ["missing"]
        try:
            files = self.manifest(kind, key)["files"]
        except (json.JSONDecodeError, KeyError) as exc:
            return [f"{folder / MANIFEST}: unreadable manifest ({exc})"]
        out = []
        for rel, meta in files.items():
            f = folder / rel
            if not f.exists():
                out.append(f"{f}: missing")
            elif f.stat().st_size != meta["bytes"]:
                out.append(f"{f}: {f.stat().st_size} bytes, manifest says {meta['bytes']}")
            elif full and sha256_file(f) != meta["sha256"]:
                out.append(f"{f}: sha256 differs from the manifest")
        return out

    def is_complete(self, kind: str, key: str) -> bool:
        return not self.problems(kind, key)

    def verified_file(self, kind: str, key: str, rel: str) -> Path:
        """Path to one file of a complete artifact, after checking its sha256 against the manifest (once per
        process while the file's stat is unchanged)."""
        folder = self.path(kind, key)
        meta = self.manifest(kind, key)["files"].get(rel)
        if meta is None:
            raise CorruptArtifactError(f"{folder}: manifest lists no file {rel!r}")
        st = (folder / rel).stat()
        seen = (str(folder / rel), st.st_ino, st.st_size, st.st_mtime_ns, meta["sha256"])
        if seen in _VERIFIED:
            return folder / rel
        if sha256_file(folder / rel) != meta["sha256"]:
            raise CorruptArtifactError(
                f"{folder / rel}: checksum mismatch; re-run with --force {kind} to recompute it"
            )
        _VERIFIED.add(seen)
        return folder / rel

    def commit(self, kind: str, key: str, staging: Path, record: dict[str, Any]) -> Path:
        """Hash the staged files, write the manifest, and rename the folder into place."""
        files = {}
        for f in sorted(p for p in staging.rglob("*") if p.is_file()):
            fsync_file(f)
            files[str(f.relative_to(staging))] = {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
        manifest = {
            **record,
            "key": key,
            "kind": kind,
            "files": files,
            "host": socket.gethostname(),
            "versions": library_versions(),
        }
        atomic_write_json(staging / MANIFEST, manifest)
        final = self.path(kind, key)
        if final.exists():
            self.quarantine(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(final)
        fsync_dir(final.parent)
        shutil.rmtree(self.root / kind / ".work" / key, ignore_errors=True)
        return final

    def quarantine(self, kind: str, key: str) -> Path | None:
        """Move a broken or forced-out artifact aside (never delete data the user may want to inspect)."""
        folder = self.path(kind, key)
        if not folder.exists():
            return None
        dest = self.root / kind / ".trash" / f"{key}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(dest)
        return dest

    def clear_work(self, kind: str, key: str) -> None:
        shutil.rmtree(self.root / kind / ".work" / key, ignore_errors=True)
