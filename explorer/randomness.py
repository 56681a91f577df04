"""Random draws per batch row, so that a data-parallel training step equals one process running the whole batch.

A training step draws noise levels, noise and dropout masks for its batch. With one ``torch.Generator`` per process,
two processes seeded alike draw the *same* noise for different clips (correlated updates), and seeded apart they
draw noise no single-process run reproduces. :class:`RowRandom` gives every row of the global batch its own
generator, seeded by (seed, step, global row index): a step split over N processes draws, row for row, what one
process running the combined batch draws, so the two updates agree to float rounding (tests/test_data_parallel.py).

The helpers :func:`randn`, :func:`rand` and :func:`randint` take either a :class:`RowRandom` (whose row count must be
the tensor's first dimension) or a plain ``torch.Generator`` / ``None`` (whole-tensor draws, as torch makes them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch


class RowRandom:
    """One generator per batch row, seeded by ``(seed, step, row)``; draws stack the rows' own draws."""

    def __init__(self, seed: int, step: int, rows: Iterable[int]) -> None:
        self.rows = list(rows)
        self.generators = [torch.Generator().manual_seed(_mix(seed, step, r)) for r in self.rows]

    @classmethod
    def for_step(cls, seed: int, step: int, batch: int, process_index: int = 0) -> RowRandom:
        """This process's rows of the global batch at ``step`` (process ``p`` holds rows ``p*batch ...``)."""
        return cls(seed, step, range(process_index * batch, (process_index + 1) * batch))

    def draw(self, fn: Callable[..., torch.Tensor], shape: Sequence[int], *args: int) -> torch.Tensor:
        """``fn(*args, shape[1:], generator=g)`` for every row's generator ``g``, stacked (``shape[0]`` = rows)."""
        shape = tuple(int(s) for s in shape)
        if not shape or shape[0] != len(self.rows):
            raise ValueError(f"a draw for {len(self.rows)} batch rows needs shape (rows, ...), got {shape}")
        return torch.stack([fn(*args, shape[1:], generator=g) for g in self.generators])


Random = RowRandom | torch.Generator | None


def _mix(seed: int, step: int, row: int) -> int:
    """A 63-bit seed from three integers (numpy's SeedSequence: nearby inputs give unrelated streams)."""
    return int(np.random.SeedSequence([seed, step, row]).generate_state(1, np.uint64)[0]) & (2**63 - 1)


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


def randn(random: Random, shape: int | Sequence[int]) -> torch.Tensor:
    """Standard normal draws of ``shape`` (per row for a :class:`RowRandom`)."""
    if isinstance(random, RowRandom):
        return random.draw(torch.randn, _shape(shape))
    return torch.randn(_shape(shape), generator=random)


def rand(random: Random, shape: int | Sequence[int]) -> torch.Tensor:
    """Uniform [0, 1) draws of ``shape`` (per row for a :class:`RowRandom`)."""
    if isinstance(random, RowRandom):
        return random.draw(torch.rand, _shape(shape))
    return torch.rand(_shape(shape), generator=random)


def randint(random: Random, high: int, shape: int | Sequence[int]) -> torch.Tensor:
    """Integers in [0, high) of ``shape`` (per row for a :class:`RowRandom`)."""
    if isinstance(random, RowRandom):
        return random.draw(torch.randint, _shape(shape), high)
    return torch.randint(high, _shape(shape), generator=random)


__all__ = ["Random", "RowRandom", "rand", "randint", "randn"]
