"""Crops handed from decode processes to the main process through shared memory, not the pool's pipe.

Why: a crop pickled, piped and unpickled through ProcessPoolExecutor costs the main process in
proportion to its bytes, and a worker that returns ready crops hands over many times fewer a second
than one that returns tiny ones (docs/performance.md, "Defaults" and "Earlier sessions"; measured
with `python -m benchmarks.studies.handoff`). Here each input in flight
owns one slot of a crop's size; the worker writes its crop into the slot and returns only the slot's
number; the main process copies the crop out and frees the slot.
"""

from __future__ import annotations

import math
from multiprocessing import shared_memory

import numpy as np


class CropSlots:
    """The main process's side: owns the shared block, hands out free slots, reads crops back."""

    def __init__(self, count: int, shape: tuple[int, ...]) -> None:
        self.count, self.shape = count, tuple(shape)
        self.shm = shared_memory.SharedMemory(create=True, size=max(1, count * math.prod(self.shape)))
        self.view = np.ndarray((count, *self.shape), dtype=np.uint8, buffer=self.shm.buf)
        self._free = list(range(count - 1, -1, -1))

    @property
    def name(self) -> str:
        return self.shm.name

    def take(self, n: int) -> list[int]:
        if n > len(self._free):
            raise RuntimeError(f"{n} crop slots wanted, {len(self._free)} free")  # a bug, not bad input
        return [self._free.pop() for _ in range(n)]

    def read(self, slot: int) -> np.ndarray:
        return self.view[slot].copy()

    def release(self, slots: list[int]) -> None:
        self._free.extend(slots)

    def close(self) -> None:
        del self.view
        self.shm.close()
        try:
            self.shm.unlink()
        except FileNotFoundError:
            pass


_worker_view: np.ndarray | None = None
_worker_shm: shared_memory.SharedMemory | None = None


def attach(name: str, count: int, shape: tuple[int, ...]) -> None:
    """In a worker process, once: map the main process's block."""
    global _worker_view, _worker_shm
    _worker_shm = _attach_untracked(name)
    _worker_view = np.ndarray((count, *shape), dtype=np.uint8, buffer=_worker_shm.buf)


def detach() -> None:
    """Undo `attach` (a worker's block is otherwise released when the process ends)."""
    global _worker_view, _worker_shm
    _worker_view = None
    if _worker_shm is not None:
        _worker_shm.close()
        _worker_shm = None


def put(slot: int, array: np.ndarray) -> bool:
    """In a worker: write a crop into its slot; False where it does not fit (then it is pickled)."""
    if _worker_view is None or array.shape != _worker_view.shape[1:] or array.dtype != np.uint8:
        return False
    _worker_view[slot] = array
    return True


def _attach_untracked(name: str) -> shared_memory.SharedMemory:
    """Attach without the resource tracker taking ownership: only the main process unlinks the block.
    (Python 3.13 has track=False; on older Pythons attaching registers the block a second time.)"""
    try:
        return shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]
    except TypeError:
        pass
    from multiprocessing import resource_tracker

    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = register
