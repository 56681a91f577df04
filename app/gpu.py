"""ZeroGPU readiness: GPU work is wrapped with ``spaces.GPU`` when the ``spaces`` package exists (on a
Hugging Face ZeroGPU Space), and left alone everywhere else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

try:  # pragma: no cover - only on Hugging Face Spaces
    import spaces  # type: ignore[import-not-found]

    ON_ZEROGPU = True
except Exception:  # noqa: BLE001 - any import failure means "not on ZeroGPU"
    spaces = None
    ON_ZEROGPU = False


def gpu(duration: int = 120) -> Callable[[F], F]:
    """``spaces.GPU(duration=...)`` on ZeroGPU, a no-op decorator otherwise."""
    if spaces is not None:  # pragma: no cover
        return spaces.GPU(duration=duration)

    def identity(fn: F) -> F:
        return fn

    return identity


@gpu(duration=180)
def generate_on_device(pipe: Any, image: Any, **kwargs: Any) -> Any:
    """``explorer.pipeline.generate`` inside the GPU allocation (ZeroGPU) or directly."""
    from explorer.pipeline import generate

    if ON_ZEROGPU:  # pragma: no cover - a callback cannot cross ZeroGPU's process boundary
        kwargs.pop("progress", None)
    return generate(pipe, image, **kwargs)
