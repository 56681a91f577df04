"""Hub repo ids and the one place the project downloads (``huggingface_hub.snapshot_download``)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def is_hub_id(text: str) -> bool:
    """Whether ``text`` reads as a hub repo id ``OWNER/NAME`` (not a relative or absolute path)."""
    return bool(_HUB_ID.match(text)) and not text.startswith((".", "/", "~"))


class HubDownloadError(RuntimeError):
    """A hub repo that could not be fetched (network, auth, missing repo, offline without a cache entry)."""


def download_snapshot(repo_id: str, allow_patterns: Sequence[str], revision: str | None = None,
                      cache_dir: str | os.PathLike[str] | None = None, local_files_only: bool | None = None) -> Path:
    """The local snapshot of hub repo ``repo_id`` (``huggingface_hub.snapshot_download``), the one place the project
    downloads: ``HF_HUB_OFFLINE`` (or ``local_files_only``) means the cache only, and ``HF_HUB_CACHE`` is read at
    call time, not when huggingface_hub was imported. Raises ``HubDownloadError`` with a one-line reason."""
    offline = bool(local_files_only) or _truthy(os.environ.get("HF_HUB_OFFLINE"))
    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline,
                                      allow_patterns=list(allow_patterns)))
    except Exception as exc:  # noqa: BLE001 - every failure becomes the same kind of readable reason
        mode = "offline (local cache only)" if offline else "online"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubDownloadError(f"cannot get hub repo {repo_id!r} {mode}: {first}") from exc


def hub_allow_patterns(variant: str | None = None) -> list[str]:
    """Files fetched from a hub repo: JSON configs, text, and the component weights in safetensors only.

    Root-level files such as SVD's original ``svd.safetensors`` checkpoint are not fetched (the patterns need a
    component folder); with a variant only that variant's weights are fetched.
    """
    suffix = f".{variant}" if variant else ""
    patterns = ["*.json", "*.txt"]
    for base in ("diffusion_pytorch_model", "model"):
        patterns += [f"*/{base}{suffix}.safetensors", f"*/{base}{suffix}-*-of-*.safetensors"]
    return patterns
