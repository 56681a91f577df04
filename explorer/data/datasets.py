"""torch datasets over the generated clips and images (``ClipDataset``, ``ClipStream``, ``ImageDataset``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch

from explorer.data.clip_cache import ClipCache
from explorer.data.render import BASE, LOWRES, _parse_size, _render_threads, make_clip, make_image


class ClipDataset(torch.utils.data.Dataset):
    """Map-style dataset of clips ``0 .. length-1`` of a split (generated on the fly, optionally cached).

    Items are tensor dicts (``frames``, ``motion_bucket_id``, ``fps``, ``motion``, ``index``) so torch's default
    collate and DataLoader workers work unchanged.
    """

    def __init__(self, split: str = "train", size: tuple[int, int] | str = LOWRES, length: int = 100_000,
                 seed: int = 0, cache_dir: str | os.PathLike | None = None) -> None:
        self.split, self.size, self.length, self.seed = split, _parse_size(size), int(length), int(seed)
        self.cache = ClipCache(cache_dir, split, self.size, seed) if cache_dir else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        if self.cache is not None:
            return self.cache.get(index)
        return make_clip(self.split, index, self.size, self.seed).to_sample()

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """Batched fetch (used by DataLoader): one thread-count switch per batch instead of per clip."""
        with _render_threads():
            return [self[i] for i in indices]


class ClipStream(torch.utils.data.IterableDataset):
    """Endless stream of clips ``start, start+1, ...`` for training; DataLoader workers take interleaved
    indices (worker w of n yields start+w, start+w+n, ...), so resuming at a clip count is just ``start``.

    Data parallel (``processes`` > 1): the clips form global batches of ``batch * processes``, and process ``p``
    streams its share, clips ``p * batch ... (p + 1) * batch - 1`` of each; N processes then see exactly the clips
    one process with the combined batch sees (``start`` counts global clips)."""

    def __init__(self, split: str = "train", size: tuple[int, int] | str = LOWRES, seed: int = 0, start: int = 0,
                 cache_dir: str | os.PathLike | None = None, batch: int = 1, process_index: int = 0,
                 processes: int = 1) -> None:
        self.split, self.size, self.seed, self.start = split, _parse_size(size), int(seed), int(start)
        self.cache = ClipCache(cache_dir, split, self.size, seed) if cache_dir else None
        if not 0 <= process_index < processes or batch < 1:
            raise ValueError(f"process {process_index} of {processes} with batch {batch}")
        self.batch, self.process_index, self.processes = int(batch), int(process_index), int(processes)

    def clip_index(self, j: int) -> int:
        """The clip index of this process's ``j``-th clip."""
        step, k = divmod(j, self.batch)
        return self.start + (step * self.processes + self.process_index) * self.batch + k

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        i = wid
        while True:
            with _render_threads():  # chunks of 8: one thread-count switch per chunk in the main process
                chunk = [self._get(self.clip_index(i + k * nw)) for k in range(8)]
            yield from chunk
            i += 8 * nw

    def _get(self, i: int) -> dict[str, torch.Tensor]:
        return self.cache.get(i) if self.cache is not None else make_clip(self.split, i, self.size,
                                                                            self.seed).to_sample()


class ImageDataset(torch.utils.data.Dataset):
    """Single-image samples for VAE training (see :func:`make_image`); items are (3, H, W) tensors."""

    def __init__(self, split: str = "train", size: tuple[int, int] | str = BASE, length: int = 100_000,
                 seed: int = 0) -> None:
        self.split, self.size, self.length, self.seed = split, _parse_size(size), int(length), int(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return make_image(self.split, index, self.size, self.seed)

