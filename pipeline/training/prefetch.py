"""Run an iterator one item ahead on a background thread: the next shuffle window is read, checked
(sha256) and decoded while the trainer works through this one.

Memory stays bounded: the reader may hold at most `depth` items at once, counting the one the
consumer is on (a token is taken before producing an item and given back when the consumer moves
past it). Items come out in the iterator's own order, so determinism is untouched. An exception in
the reader is re-raised in the consumer unchanged (same type, same message: e.g. a checksum mismatch
names the shard and the fix).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
U = TypeVar("U")

_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterator[T], transform: Callable[[T], U], depth: int = 2) -> Iterator[U]:
    """`transform(item)` for each item, computed on a reader thread, at most `depth` alive at once."""
    tokens = threading.Semaphore(depth)
    out: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()

    def reader() -> None:
        try:
            while True:
                tokens.acquire()
                if stop.is_set():
                    return
                try:
                    item = next(items)
                except StopIteration:
                    out.put(_DONE)
                    return
                out.put(transform(item))
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer, which re-raises it)
            out.put(_Failed(exc))

    thread = threading.Thread(target=reader, name="shard-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            got = out.get()
            if got is _DONE:
                return
            if isinstance(got, _Failed):
                raise got.exc
            yield got
            del got  # the consumer is past this item: its memory may be reused
            tokens.release()
    finally:
        stop.set()
        tokens.release()
