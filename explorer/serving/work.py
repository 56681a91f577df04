"""One lock for the torch work of the app's process, with foreground priority, and the cancellation signal."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class RequestCancelled(Exception):
    """Raised from a generation's progress callback when its request was cancelled: stops the denoising loop
    at the next step so the model lock and memory are released (nothing is cached or written)."""


class WorkLock:
    """One lock for the torch work of this process (generation; FLOP counting only when it cannot run in its own
    process, see FlopsService), with foreground priority.

    Why: on a small CPU two generations at once are slower than one after the other, background work must yield
    to users, and torch's FLOP counter installs process-global module hooks that a concurrent model run would
    mix into its records.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._waiting = 0
        self._cond = threading.Condition()
        self._interactive = 0  # quick interactive work in flight elsewhere (FLOP counts in their own process)

    @contextmanager
    def interactive(self) -> Iterator[None]:
        """Mark a short interactive job (a FLOP count) as running: generations pause at their next denoising
        step until it ends (``yield_to_interactive``), so that on a small CPU the count gets the cores and
        answers in seconds instead of sharing them with a 50-step run."""
        with self._cond:
            self._interactive += 1
        try:
            yield
        finally:
            with self._cond:
                self._interactive -= 1
                self._cond.notify_all()

    def yield_to_interactive(self, max_wait: float = 20.0) -> float:
        """Called by a generation between denoising steps: wait (at most ``max_wait`` s) while interactive work
        runs; returns the seconds waited."""
        start = time.perf_counter()
        with self._cond:
            while self._interactive and time.perf_counter() - start < max_wait:
                self._cond.wait(timeout=0.25)
        return time.perf_counter() - start

    @contextmanager
    def foreground(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
        try:
            with self._lock:
                yield
        finally:
            with self._cond:
                self._waiting -= 1
                self._cond.notify_all()

    def busy(self) -> bool:
        """Whether another thread holds the lock right now (a generation is running)."""
        if self._lock.acquire(blocking=False):
            self._lock.release()
            return False
        return True

    @contextmanager
    def background(self) -> Iterator[None]:
        with self._cond:
            while self._waiting:
                self._cond.wait(timeout=0.5)
        with self._lock:
            yield


__all__ = ["RequestCancelled", "WorkLock"]
