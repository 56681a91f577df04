"""Shared test set-up: every test runs torch on one thread.

The tests use tiny and micro models, which are dominated by per-op overhead: one thread is as fast and does not
fight a shared 2-core machine (two OpenMP threads on a busy machine can be many times slower).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random 160x90 RGB PNG (the app tests' upload)."""
    import numpy as np
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((90, 160, 3)) * 255).astype(np.uint8)).save(path)
    return str(path)
