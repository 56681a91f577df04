"""Generation: :func:`generate` one clip from a loaded stage, with its cost (:class:`GenerationResult`).

Every stage starts from the same seeded noise: the initial latents are drawn from a CPU ``torch.Generator``
seeded with ``seed`` and passed explicitly (:func:`initial_latents`), and the same generator then supplies the
conditioning-image noise augmentation, so results never depend on a stage's pipeline internals or device.

One-step sampling on ``EulerDiscreteScheduler`` (SVD config: Karras sigmas, sigma_max 700, v-prediction):
``set_timesteps(1)`` gives ``sigmas = [700, 0]`` (the Karras ramp with one point is sigma_max; the final sigma is
zero), so the single UNet evaluation happens at sigma_max with c_noise = 0.25 ln 700 = 1.638 and input scaling
1/sqrt(700^2+1). The Euler step is ``x + (x - x0) / sigma * (0 - sigma) = x0``: the result is exactly the
denoised prediction x0 = c_skip x + c_out F (v-prediction, c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1)), up to
float rounding. This is the adversarial stages' inference (docs/paper.md: one evaluation at s_max). The initial latents
are unit noise times the scheduler's ``init_noise_sigma`` = sqrt(700^2+1) (diffusers' 'leading' spacing).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableVideoDiffusionPipeline

from explorer.pipeline.images import prepare_image
from explorer.pipeline.record import stage_record


@dataclass
class GenerationResult:
    """One generated clip and what it cost.

    ``nfe`` counts UNet evaluations per video as measured by a forward hook (a CFG call on a batch of 2 counts
    2); ``unet_seconds`` is the time inside UNet forwards; ``seconds`` the whole pipeline call (image encoding,
    VAE encode, denoising, decoding). ``peak_memory`` (MB): CUDA peak allocated memory during the call on a GPU;
    on the CPU the peak resident memory the call added above what the process held when it began
    (:class:`RssSampler`; ``settings['peak_memory']`` says which). ``breakdown`` splits ``seconds`` into the
    image encoder, VAE encode, UNet, VAE decode, postprocessing and the rest (:class:`_PhaseTimer`).
    """

    frames: np.ndarray  # uint8 [F, H, W, 3]
    seconds: float
    unet_seconds: float
    nfe: int
    peak_memory: float | None
    seed: int
    settings: dict[str, Any]
    unet_calls: int = 0
    breakdown: dict[str, float] = field(default_factory=dict)  # seconds per part of the call (_PhaseTimer.PARTS)


def initial_latents(
    seed: int, num_frames: int, height: int, width: int, channels: int = 4, vae_factor: int = 8
) -> tuple[torch.Tensor, torch.Generator]:
    """Unit-variance starting noise [1, F, C, H/f, W/f] from a CPU generator seeded with ``seed``.

    Returns the generator too: it continues to supply the conditioning-image noise augmentation, so that two
    stages of the same latent shape see identical randomness regardless of their device.
    """
    generator = torch.Generator("cpu").manual_seed(int(seed))
    shape = (1, num_frames, channels, height // vae_factor, width // vae_factor)
    return torch.randn(shape, generator=generator, dtype=torch.float32), generator


class RssSampler:
    """Peak resident memory of one call on the CPU: a thread samples the process's RSS (``/proc/self/statm``)
    every ``interval`` seconds between :meth:`start` and :meth:`stop`. ``ru_maxrss`` cannot do this: it is the
    process's lifetime peak, the same number for every stage once the largest one has run."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.available = Path("/proc/self/statm").is_file()
        self.start_mb = self.peak_mb = 0.0
        self._stop = None
        self._thread = None

    @staticmethod
    def rss_mb() -> float:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20

    def start(self) -> None:
        if not self.available:
            return
        import threading

        self.start_mb = self.peak_mb = self.rss_mb()
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.wait(self.interval):
                self.peak_mb = max(self.peak_mb, self.rss_mb())

        self._thread = threading.Thread(target=run, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, self.rss_mb())
            self._thread = None

    @property
    def added_mb(self) -> float:
        return max(0.0, self.peak_mb - self.start_mb)


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _resolve_settings(
    defaults: dict[str, Any],
    *,
    width: int | None,
    height: int | None,
    num_frames: int | None,
    steps: int | None,
    min_guidance: float | None,
    max_guidance: float | None,
    seed: int,
    motion_bucket_id: int | None,
    fps: int | None,
    noise_aug_strength: float | None,
    decode_chunk_size: int | None,
) -> dict[str, Any]:
    """:func:`generate`'s arguments with ``None`` replaced by the stage's ``defaults`` (or SVD's), validated."""

    def pick(name: str, value: Any) -> Any:
        if value is not None:
            return value
        if defaults.get(name) is None:
            raise ValueError(f"{name} is required (the pipeline has no stage record with a default)")
        return defaults[name]

    width = _check_positive_int("width", pick("width", width))
    height = _check_positive_int("height", pick("height", height))
    if num_frames is None:
        num_frames = defaults.get("num_frames", 14)
    num_frames = _check_positive_int("num_frames", num_frames)
    steps = _check_positive_int("steps", pick("steps", steps))
    min_guidance = float(pick("min_guidance", min_guidance))
    max_guidance = float(pick("max_guidance", max_guidance))
    if decode_chunk_size is None:
        decode_chunk_size = defaults.get("decode_chunk_size")
    if decode_chunk_size is not None:
        decode_chunk_size = _check_positive_int("decode_chunk_size", decode_chunk_size)
    seed = int(seed)
    if motion_bucket_id is None:
        motion_bucket_id = defaults.get("motion_bucket_id", 127)
    motion_bucket_id = _check_positive_int("motion_bucket_id", motion_bucket_id, minimum=0)
    fps = _check_positive_int("fps", fps if fps is not None else defaults.get("fps", 7))
    if noise_aug_strength is None:
        noise_aug_strength = defaults.get("noise_aug_strength", 0.02)
    noise_aug_strength = float(noise_aug_strength)
    if noise_aug_strength < 0 or not np.isfinite(noise_aug_strength):
        raise ValueError(f"noise_aug_strength must be >= 0, got {noise_aug_strength}")
    if not (np.isfinite(min_guidance) and np.isfinite(max_guidance)) or min_guidance > max_guidance:
        raise ValueError(f"need min_guidance <= max_guidance, got {min_guidance} > {max_guidance}")
    return {
        "width": width,
        "height": height,
        "num_frames": num_frames,
        "steps": steps,
        "min_guidance": min_guidance,
        "max_guidance": max_guidance,
        "decode_chunk_size": decode_chunk_size,
        "seed": seed,
        "motion_bucket_id": motion_bucket_id,
        "fps": fps,
        "noise_aug_strength": noise_aug_strength,
    }


def _check_multiple(width: int, height: int, vae_factor: int) -> None:
    multiple = max(8, vae_factor)  # diffusers' SVD pipeline checks multiples of 8
    if width % multiple or height % multiple:
        w8 = max(multiple, round(width / multiple) * multiple)
        h8 = max(multiple, round(height / multiple) * multiple)
        raise ValueError(f"width and height must be multiples of {multiple}, got {width}x{height} (try {w8}x{h8})")


class _UnetMeter:
    """Counts the UNet's evaluations (a batch of 2 counts 2) and times its forwards, through forward hooks."""

    def __init__(self, unet: torch.nn.Module, device: torch.device) -> None:
        self.device = device
        self.nfe = 0
        self.calls = 0
        self.seconds = 0.0
        self._start = 0.0
        self._handles = [
            unet.register_forward_pre_hook(self._pre_hook, with_kwargs=True),
            unet.register_forward_hook(self._post_hook, with_kwargs=True),
        ]

    def _pre_hook(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs["sample"]
        self.nfe += int(sample.shape[0])
        self.calls += 1
        _sync(self.device)
        self._start = time.perf_counter()

    def _post_hook(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        _sync(self.device)
        self.seconds += time.perf_counter() - self._start

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class _PhaseTimer:
    """Times the parts of one SVD pipeline call by wrapping the pipeline's own steps on the instance (restored by
    :meth:`remove`): where an end-to-end clip's time goes beside the UNet (issue 16: a one-step clip should cost
    close to its one UNet evaluation)."""

    PARTS = {"image_encoder": "_encode_image", "vae_encode": "_encode_vae_image", "vae_decode": "decode_latents"}
    ORDER = ("image_encoder", "vae_encode", "unet", "vae_decode", "postprocess", "other")

    def __init__(self, pipe: Any, device: torch.device) -> None:
        self.seconds: dict[str, float] = {}
        self._restore: list[tuple[Any, str]] = []
        for part, name in self.PARTS.items():
            self._wrap(pipe, name, part, device)
        self._wrap(pipe.video_processor, "postprocess_video", "postprocess", device)

    def _wrap(self, owner: Any, name: str, part: str, device: torch.device) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            _sync(device)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                _sync(device)
                self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)
        self._restore.append((owner, name))

    def remove(self) -> None:
        for owner, name in self._restore:
            owner.__dict__.pop(name, None)  # the class's method shows through again
        self._restore = []

    def breakdown(self, total: float, unet: float) -> dict[str, float]:
        parts = dict(self.seconds, unet=unet)
        parts["other"] = max(0.0, total - sum(parts.values()))
        return {k: parts.get(k, 0.0) for k in self.ORDER}


def _peak_memory(device: torch.device, sampler: RssSampler | None) -> tuple[float, str]:
    """(peak MB, what it measures) after a call: CUDA peak allocation, the RSS the call added, or ru_maxrss."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "CUDA max_memory_allocated during the call"
    if sampler is not None and sampler.available:
        return sampler.added_mb, (
            f"peak resident memory this call added above the {sampler.start_mb:.0f} MB the process held "
            f"when it began (RSS sampled every {sampler.interval * 1e3:.0f} ms; other work in the same "
            f"process at the same time is counted too)"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    return peak, "process peak resident set size (ru_maxrss), process-wide"


def _result_settings(
    record: Any, s: dict[str, Any], device: torch.device, dtype: torch.dtype, peak_kind: str
) -> dict[str, Any]:
    """``GenerationResult.settings``: what a call actually used (resolved settings ``s``) and how it was measured."""
    return {
        "stage": record.slug if record is not None else None,
        "width": s["width"],
        "height": s["height"],
        "num_frames": s["num_frames"],
        "steps": s["steps"],
        "min_guidance": s["min_guidance"],
        "max_guidance": s["max_guidance"],
        "cfg": s["max_guidance"] > 1.0,
        "motion_bucket_id": s["motion_bucket_id"],
        "fps": s["fps"],
        "noise_aug_strength": s["noise_aug_strength"],
        "decode_chunk_size": s["decode_chunk_size"],
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "peak_memory": peak_kind,
        "nfe_accounting": "UNet evaluations per video; a classifier-free-guidance batch of 2 counts 2",
    }


def generate(
    pipe: StableVideoDiffusionPipeline,
    image: Any,
    *,
    width: int | None = None,
    height: int | None = None,
    num_frames: int | None = None,
    steps: int | None = None,
    min_guidance: float | None = None,
    max_guidance: float | None = None,
    seed: int = 0,
    motion_bucket_id: int | None = None,
    fps: int | None = None,
    noise_aug_strength: float | None = None,
    decode_chunk_size: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> GenerationResult:
    """Generate one clip from ``image``. Arguments left ``None`` take the loaded stage's defaults (its
    ``stage.json``); ``num_frames``, ``motion_bucket_id``, ``fps`` and ``noise_aug_strength`` then fall back to
    SVD's 14, 127, 7 and 0.02.

    Classifier-free guidance (a batch of 2 per step) is active when ``max_guidance > 1``, as in diffusers; the
    guidance scale ramps linearly from ``min_guidance`` (first frame) to ``max_guidance`` (last frame), so
    ``min_guidance`` must not exceed ``max_guidance``. ``steps=1`` is one evaluation at sigma_max returning the
    x0 prediction (see the module docstring). ``fps`` is the clip's frame rate (the UNet is conditioned on
    fps - 1, as SVD was). ``progress(done, total)`` is called after each denoising step. Same inputs and seed
    give bit-identical frames on the CPU.

    ``image`` is anything :func:`~explorer.pipeline.images.load_image` accepts; an RGB image that
    ``load_image`` already returned is not decoded or converted again (only resized to the stage's size).
    """
    record = stage_record(pipe)
    s = _resolve_settings(
        record.generation_defaults() if record is not None else {},
        width=width, height=height, num_frames=num_frames, steps=steps, min_guidance=min_guidance,
        max_guidance=max_guidance, seed=seed, motion_bucket_id=motion_bucket_id, fps=fps,
        noise_aug_strength=noise_aug_strength, decode_chunk_size=decode_chunk_size,
    )
    width, height, num_frames, steps = s["width"], s["height"], s["num_frames"], s["steps"]
    vae_factor = int(pipe.vae_scale_factor)
    _check_multiple(width, height, vae_factor)

    cond = prepare_image(image, width, height)
    unet = pipe.unet
    device = unet.device
    latents, generator = initial_latents(
        s["seed"], num_frames, height, width, channels=unet.config.in_channels // 2, vae_factor=vae_factor
    )
    latents = latents.to(device=device, dtype=unet.dtype)

    def on_step_end(_pipe: Any, i: int, _t: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
        if progress is not None:
            progress(i + 1, steps)
        return {}

    meter = _UnetMeter(unet, device)
    phases = _PhaseTimer(pipe, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sampler = RssSampler() if device.type != "cuda" else None
    try:
        _sync(device)
        if sampler is not None:
            sampler.start()
        start = time.perf_counter()
        out = pipe(
            cond,
            height=height,
            width=width,
            num_frames=num_frames,
            num_inference_steps=steps,
            min_guidance_scale=s["min_guidance"],
            max_guidance_scale=s["max_guidance"],
            fps=s["fps"],
            motion_bucket_id=s["motion_bucket_id"],
            noise_aug_strength=s["noise_aug_strength"],
            decode_chunk_size=s["decode_chunk_size"],
            generator=generator,
            latents=latents,
            output_type="np",
            callback_on_step_end=on_step_end,
        )
        _sync(device)
        seconds = time.perf_counter() - start
    finally:
        meter.remove()
        phases.remove()
        if sampler is not None:
            sampler.stop()
    video = np.asarray(out.frames)[0]
    frames = np.round(np.clip(video, 0.0, 1.0) * 255.0).astype(np.uint8)
    peak, peak_kind = _peak_memory(device, sampler)
    return GenerationResult(
        frames=frames,
        seconds=seconds,
        unet_seconds=meter.seconds,
        nfe=meter.nfe,
        peak_memory=peak,
        seed=s["seed"],
        settings=_result_settings(record, s, device, unet.dtype, peak_kind),
        unet_calls=meter.calls,
        breakdown=phases.breakdown(seconds, meter.seconds),
    )
