"""Small iterator helpers."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

Item = TypeVar("Item")
_DONE = object()


def prefetch(items: Iterator[Item], depth: int = 2) -> Iterator[Item]:
    """Produce ``items`` on a background thread, up to ``depth`` ahead of the consumer.

    Lets a GIL-releasing producer (zlib inflating a chunk) overlap the consumer's work
    (HDF5 compressing the previous one). Errors surface in the consumer.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(item)
            buffer.put(_DONE)
        except BaseException as error:  # handed to the consumer
            buffer.put(error)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while (item := buffer.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full buffer
            try:
                buffer.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)
