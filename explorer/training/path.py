"""The whole tiny compression path, in order: each stage trained from its parent and exported to checkpoints/.

``build_path`` skips stages whose folder is finished (``stage.json`` present), resumes an interrupted stage
from its run folder, and records what each stage cost. ``Plan.quick()`` is the same path on the micro model
with a few steps per stage (used by a test, end to end in minutes).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from explorer import data
from explorer import stages as registry
from explorer.pipeline import load_stage, store_weights_as
from explorer.training.adversarial import AdversarialConfig, finetune_one_step
from explorer.training.denoise import DenoiseConfig
from explorer.training.pruning import learn_gates
from explorer.training.stage_runs import export_stage, export_svd_512, load_init, train_denoise_stage
from explorer.training.teacher_pairs import PairsConfig, build_pairs
from explorer.training.vae import VAETrainConfig, train_vae
from explorer.transforms import apply_transforms
from explorer.transforms.funnels import add_funnels, merge_funnels
from explorer.transforms.temporal_gates import num_temporal_blocks

ORDER = ("vae", "latent-cache-small", "svd-pretrain-small", "latent-cache", "svd-pretrain", "svd", "svd-512",
         "lowres-ft", "optimized-xattn", "teacher-pairs", "adversarial-1step", "temporal-multiscale",
         "temporal-pruning", "channel-funnels", "mobilevd-hd")


@dataclass
class Plan:
    """Budgets of every step of the path (EDM-style: every knob a plain field)."""

    scale: str = "tiny"
    lowres: tuple[int, int] = (128, 64)
    base: tuple[int, int] = (256, 144)
    vae_arch: str = "patch"  # PCA patch encoder + residual decoder (explorer/vae.py)
    vae_steps: int = 3000  # decoder steps
    # the family's image encoder, frozen for the whole campaign (its embeddings are cached); empty: a random one
    image_encoder: str = "checkpoints/_shared/image_encoder"
    cache_small_clips: int = 49_152  # encoded once at 64x32 (2.9 GB), read ~4 times by the small pretraining
    cache_clips: int = 32_768  # at 128x64 (7.5 GB)
    pretrain_small_steps: int = 12_000  # first at a quarter of the pixels: ~4x the clips per CPU hour
    pretrain_small_size: tuple[int, int] = (64, 32)
    pretrain_small_batch: int = 16
    pretrain_steps: int = 15_000
    pretrain_size: tuple[int, int] = (128, 64)
    pretrain_batch: int = 8
    # noise levels (ln sigma ~ N(mean, std^2)): a high-sigma emphasis for the 64x32 phase, to learn to carry the
    # conditioning image through high noise; the 128x64 phase ran with it to step 3,800, then with SVD's 0.7 / 1.6
    # (docs/training.md, session 10: paired from step 3,800, SVD's gave +0.30 dB sampled frame-0 PSNR and +0.35 dB
    # consecutive-frame PSNR in 400 steps; the high emphasis had starved the sampler's last, low levels)
    pretrain_small_p_mean: float = 1.5
    pretrain_small_p_std: float = 1.4
    pretrain_p_mean: float = 0.7
    pretrain_p_std: float = 1.6
    # frame 0's loss weight in the 128x64 phase (docs/training.md, session 8: a paired probe at 64x32 gained 0.44 dB
    # of sampled frame-0 PSNR in 300 steps where weight 1 gained nothing); the 64x32 phase ran with 1
    pretrain_frame0_weight: float = 8.0
    pretrain_small_frame0_weight: float = 1.0
    # frames per training clip in the 128x64 phase: 14 to step 3,100, then 8 (docs/training.md, session 10: paired
    # from step 3,100, 8 frames gained more per step than 14 -- +0.17 dB frame-0 and +0.97 dB consecutive-frame
    # PSNR at step 3,400 -- at 0.55x the cost per step). The model always samples 14 (curve rows, finetunes)
    pretrain_frames: int = 8
    curriculum_start: float = 2.0  # max motion (ref px per frame) at the start of pretraining ...
    curriculum_steps: int = 4000  # ... reaching the full range after these steps (of each pretraining phase)
    probe_every: int = 1000  # learning-curve rows (runs/<phase>/curve.jsonl)
    max_seconds: float = 0.0  # per denoising run: stop cleanly after this long, resumable (0: no limit)
    # the finetunes (`svd` at 256x144, `lowres-ft` at 128x64, 14 frames) start from the 128x64 phase, whose cosine
    # ended at 1.5e-5: they re-warm to a third of the pretraining peak (a finetune, not a restart) and keep frame
    # 0's weight of the phase they continue
    finetune_lr: float = 1e-4
    finetune_frame0_weight: float = 8.0
    finetune_probe_every: int = 300  # curve rows of the finetunes: they are short, and the first rows matter most
    # per-latent-channel loss weights ~ Var^-power in the finetunes (DenoiseConfig.channel_weight_power; 0: SVD's)
    finetune_channel_weight_power: float = 0.0
    svd_steps: int = 1200  # session 14: 3.3 s per step on two threads plus 225 s per curve row fit one session
    svd_batch: int = 4
    # 0: `lowres-ft` is the 128x64 pretraining's EMA unchanged (docs/training.md, session 13: a 3,000-step finetune
    # from it lost 0.36 dB frame-0 and 0.70 dB consecutive-frame PSNR at N = 64, paired)
    lowres_steps: int = 0
    lowres_batch: int = 8
    adv_steps: int = 400
    adv_batch: int = 4
    multiscale_steps: int = 300
    gates_steps: int = 200
    prune_ft_steps: int = 200
    pruned_fraction: float = 0.7  # 70% of the temporal blocks pruned, as the paper
    funnel_steps: int = 300
    fun_factor: float = 0.5
    hd_steps: int = 150
    hd_batch: int = 2
    num_workers: int = 1
    threads: int = 0
    ckpt_every: int = 100
    one_step_dtype: str = "float16"  # storage dtype of the one-step stages' UNets (loaded as float32)
    denoise_lr: float = 3e-4
    adv_lr_g: float = 5e-5  # session 4's and session 16's one-step runs
    # distillation onto the teacher's samples (a deviation from the paper, docs/training.md, session 16; 0 = SF-V's
    # pure recipe): pairs computed once by the `teacher-pairs` step at 128x64 (8 guided Euler steps of optimized-xattn)
    teacher_pairs: int = 1024
    adv_distill_weight: float = 1.0
    adv_distill_motion_weight: float = 0.0  # + frame-difference distillation (AdversarialConfig.distill_motion_weight)
    adv_probe_every: int = 50  # held-out discriminator accuracy every n steps (0: off)
    adv_d_p_mean: float = -1.0  # the discriminator's noise level, ln sigma ~ N(mean, 1) (SF-V: -1)
    # SF-V's pseudo-Huber to the real clip from the generator's (high) noise levels (0: off). Turning it off did not
    # make the one-step student follow the motion bucket (docs/training.md, session 19), so SF-V's 0.1 stays
    adv_recon_weight: float = 0.1
    # the discriminator's temporal heads: "pooled" (space pooled first: blind to translation, every shipped run)
    # or "local" (over time at every location, SF-V's layout; AdversarialConfig.temporal_head)
    adv_temporal_head: str = "pooled"
    # distribution matching through the teacher's score (AdversarialConfig.dmd_weight; docs/training.md, session 20)
    adv_dmd_weight: float = 0.0
    # a latent motion discriminator trained from scratch, bucket-conditioned (AdversarialConfig.motion_d_weight;
    # docs/training.md, session 21; 0: off) and its noise level, ln sigma ~ N(mean, 1)
    adv_motion_d_weight: float = 0.0
    adv_motion_d_p_mean: float = -2.0
    adv_motion_d_real: str = "data"  # "teacher": the stored teacher clips are its real ones (needs the pairs)
    # SF-V's heads and reconstruction term (AdversarialConfig.sfv_terms); False: distillation alone, cheaper per step
    adv_sfv_terms: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def override(self, items: list[str]) -> None:
        """Apply ``FIELD=VALUE`` overrides (build_path's ``--set``): values parsed as the field's type (tuples as
        ``128x64``, booleans as true/false/1/0); a clear ValueError for an unknown field or a bad value."""
        names = {f.name for f in fields(self)}
        for item in items:
            name, _, value = item.partition("=")
            if name not in names or name == "extra":
                raise ValueError(f"unknown plan field {name!r}; fields: {', '.join(sorted(names - {'extra'}))}")
            current = getattr(self, name)
            try:
                if isinstance(current, bool):
                    if value.lower() not in ("true", "false", "1", "0"):
                        raise ValueError("expected true or false")
                    parsed: Any = value.lower() in ("true", "1")
                elif isinstance(current, tuple):
                    parsed = tuple(int(v) for v in value.lower().split("x"))
                else:
                    parsed = type(current)(value)
            except ValueError as exc:
                raise ValueError(f"bad value for {name}: {value!r} ({exc})") from None
            setattr(self, name, parsed)

    @classmethod
    def quick(cls) -> Plan:
        """The micro model, two steps per stage: exercises every code path end to end in a few minutes."""
        return cls(scale="micro", lowres=(32, 16), base=(64, 32), vae_steps=2, image_encoder="",
                   cache_small_clips=4, cache_clips=4, curriculum_steps=2, probe_every=0, finetune_probe_every=0,
                   pretrain_small_steps=1, pretrain_small_size=(32, 16), pretrain_small_batch=1, pretrain_steps=2,
                   pretrain_size=(32, 16), pretrain_batch=1, svd_steps=1, svd_batch=1, lowres_steps=1,
                   lowres_batch=1, adv_steps=2, adv_batch=1, multiscale_steps=1, gates_steps=2, prune_ft_steps=1,
                   funnel_steps=1, hd_steps=1, hd_batch=1, num_workers=0, ckpt_every=1, teacher_pairs=2)


def _done(folder: Path) -> bool:
    return (folder / "stage.json").is_file()


def _objective(text: str, cfg: AdversarialConfig) -> str:
    """A one-step stage's objective as its stage.json records it (the distillation term is a deviation)."""
    if cfg.distill_weight <= 0:
        return text
    return (f"{text} + {cfg.distill_weight:g} x distillation onto the teacher's {cfg.distill_steps}-step samples "
            "(a deviation from the paper, docs/training.md)")


def _progress_note(slug: str, status: str, seconds: float | None = None) -> str:
    return f"[build_path] {slug}: {status}" + (f" ({seconds:.0f} s)" if seconds is not None else "")


class PathBuilder:
    """Runs the path stage by stage; every stage is a method named after it."""

    def __init__(self, plan: Plan, checkpoints: str | Path = "checkpoints", runs: str | Path = "runs",
                 progress: bool = True) -> None:
        self.plan, self.progress = plan, progress
        self.ckpt, self.runs = Path(checkpoints), Path(runs)
        self.vae_dir = self.runs / "vae" / "final"
        self.report: dict[str, Any] = {}

    # -------------------------------------------------------------------------------------------- helpers
    def _denoise_cfg(self, name: str, size: tuple[int, int], steps: int, batch: int, **kw: Any) -> DenoiseConfig:
        p = self.plan
        return DenoiseConfig(out=str(self.runs / name), size=size, steps=steps, batch=batch, lr=p.denoise_lr,
                             warmup=min(200, max(1, steps // 10)), ckpt_every=p.ckpt_every, num_workers=p.num_workers,
                             threads=p.threads, log_every=1 if steps < 20 else 20, train_image_encoder=False,
                             probe_every=p.probe_every, max_seconds=p.max_seconds, **kw)

    def _cache_dir(self, size: tuple[int, int]) -> Path:
        return self.runs / f"latent-cache-{size[0]}x{size[1]}"

    def image_encoder_dir(self) -> str:
        """The family's frozen image encoder: the plan's folder, or a seeded random one saved once in runs/."""
        if self.plan.image_encoder:
            return self.plan.image_encoder
        folder = self.runs / "image-encoder"
        if not (folder / "model.safetensors").exists():
            from explorer.components import build_image_encoder

            build_image_encoder(self.plan.scale).save_pretrained(folder, safe_serialization=True)
        return str(folder)

    def _build_cache(self, size: tuple[int, int], clips: int) -> dict[str, Any]:
        from transformers import CLIPVisionModelWithProjection

        from explorer.latent_cache import build_latent_cache
        from explorer.vae import load_vae

        if self.plan.threads:
            torch.set_num_threads(self.plan.threads)
        encoder = CLIPVisionModelWithProjection.from_pretrained(self.image_encoder_dir(), use_safetensors=True)
        manifest = build_latent_cache(self._cache_dir(size), load_vae(self.vae_dir), encoder.eval(), size, clips,
                                      progress=self.progress)
        return {"cache": str(self._cache_dir(size)), "clips": sum(s["count"] for s in manifest["shards"])}

    def _cache_done(self, size: tuple[int, int], clips: int) -> bool:
        path = self._cache_dir(size) / "manifest.json"
        return path.is_file() and sum(s["count"] for s in json.loads(path.read_text())["shards"]) >= clips

    def _adv_cfg(self, name: str, steps: int, size: tuple[int, int] | None = None, batch: int | None = None,
                 **kw: Any) -> AdversarialConfig:
        p = self.plan
        size = size or p.lowres
        # the pairs are at the low resolution: a stage at another size (mobilevd-hd) trains without distillation
        pairs = str(self._pairs_dir()) if p.adv_distill_weight > 0 and tuple(size) == tuple(p.lowres) else ""
        log_every = 1 if steps < 20 else 10
        probe = p.adv_probe_every if p.adv_probe_every and p.adv_probe_every % log_every == 0 else 0
        return AdversarialConfig(out=str(self.runs / name), size=size, steps=steps,
                                 batch=batch or p.adv_batch, lr_g=p.adv_lr_g, warmup=min(50, max(1, steps // 10)),
                                 ckpt_every=p.ckpt_every, num_workers=p.num_workers, threads=p.threads,
                                 log_every=log_every, distill_weight=p.adv_distill_weight if pairs else 0.0,
                                 distill_motion_weight=p.adv_distill_motion_weight if pairs else 0.0,
                                 pairs=pairs, probe_every=probe, d_p_mean=p.adv_d_p_mean,
                                 recon_weight=p.adv_recon_weight, temporal_head=p.adv_temporal_head,
                                 dmd_weight=p.adv_dmd_weight, motion_d_weight=p.adv_motion_d_weight,
                                 motion_d_p_mean=p.adv_motion_d_p_mean,
                                 motion_d_real=p.adv_motion_d_real, sfv_terms=p.adv_sfv_terms, **kw)

    def _pairs_dir(self) -> Path:
        return self.runs / f"teacher-pairs-{self.plan.lowres[0]}x{self.plan.lowres[1]}"

    def _pairs_config(self) -> PairsConfig:
        p = self.plan
        return PairsConfig(out=str(self._pairs_dir()), size=p.lowres, pairs=p.teacher_pairs,
                           shard=min(32, p.teacher_pairs), chunk=min(8, p.teacher_pairs), threads=p.threads)

    def _size_for(self, slug: str) -> tuple[int, int]:
        stage = registry.get_stage(slug)
        return self.plan.base if stage.width == 1024 else self.plan.lowres

    def _export(self, slug: str, unet: torch.nn.Module, pipe: Any, transforms: list[registry.Transform],
                extra: dict[str, Any], unet_from: str | None = None) -> Path:
        folder = export_stage(slug, unet, pipe.image_encoder, pipe.vae, self.ckpt, extra=extra,
                              size=self._size_for(slug), transforms=transforms, scale=self.plan.scale,
                              unet_from=unet_from)
        if registry.get_stage(slug).one_step and self.plan.one_step_dtype != "float32":
            store_weights_as(folder, self.plan.one_step_dtype)  # keeps the shipped path well under 100 MB
        return folder

    def _parent(self, slug: str) -> tuple[Any, Any]:
        parent = registry.get_stage(slug).parent
        return load_stage(self.ckpt / parent)

    def _teacher(self) -> torch.nn.Module:
        pipe, _ = load_stage(self.ckpt / "optimized-xattn")
        return pipe.unet

    def _adversarial(self, slug: str, unet: torch.nn.Module, pipe: Any, cfg: AdversarialConfig,
                     **kw: Any) -> dict[str, Any]:
        if cfg.pairs and not self.finished("teacher-pairs"):  # a partial store would silently shrink the data
            raise RuntimeError(f"{slug} distils from {cfg.pairs}, which is not complete: run the teacher-pairs step")
        return finetune_one_step(cfg, unet, self._teacher(), pipe.vae, pipe.image_encoder, progress=self.progress,
                                 **kw)

    @staticmethod
    def _last_log(path: str) -> dict[str, Any]:
        p = Path(path)
        rows = [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []
        return rows[-1] if rows else {}

    # --------------------------------------------------------------------------------------------- stages
    def vae(self) -> dict[str, Any]:
        if (self.vae_dir / "diffusion_pytorch_model.safetensors").exists():
            return {"skipped": True}
        p = self.plan
        cfg = VAETrainConfig(out=str(self.runs / "vae"), scale=p.scale, arch=p.vae_arch, steps=p.vae_steps,
                             ckpt_every=p.ckpt_every, log_every=1 if p.vae_steps < 20 else 25)
        if p.scale == "micro":
            cfg = replace(cfg, clips_per_step=1, clip_frames=2, clip_size=p.lowres, crops_per_step=2,
                          crop_size=(16, 16), eval_images=2, pca_images=8)
        return train_vae(cfg, progress=self.progress)

    def latent_cache_small(self) -> dict[str, Any]:
        return self._build_cache(self.plan.pretrain_small_size, self.plan.cache_small_clips)

    def latent_cache(self) -> dict[str, Any]:
        return self._build_cache(self.plan.pretrain_size, self.plan.cache_clips)

    def _pretrain_cfg(self, name: str, size: tuple[int, int], steps: int, batch: int, frame0_weight: float,
                      frames: int, p_mean: float, p_std: float) -> DenoiseConfig:
        p = self.plan
        return self._denoise_cfg(name, size, steps, batch, cache=str(self._cache_dir(size)), p_mean=p_mean,
                                 p_std=p_std, curriculum_start=p.curriculum_start,
                                 curriculum_steps=min(p.curriculum_steps, steps), frame0_weight=frame0_weight,
                                 frames=frames)

    def svd_pretrain_small(self) -> dict[str, Any]:
        p = self.plan
        if p.pretrain_small_steps <= 0:
            return {"skipped": True}
        cfg = self._pretrain_cfg("svd-pretrain-small", p.pretrain_small_size, p.pretrain_small_steps,
                                 p.pretrain_small_batch, p.pretrain_small_frame0_weight, data.NUM_FRAMES,
                                 p.pretrain_small_p_mean, p.pretrain_small_p_std)
        return train_denoise_stage("svd", cfg, None, vae_dir=str(self.vae_dir), checkpoints=None, scale=p.scale,
                                   progress=self.progress, image_encoder_dir=self.image_encoder_dir())

    def svd_pretrain(self) -> dict[str, Any]:
        p = self.plan
        small = self.runs / "svd-pretrain-small"
        init = str(small) if p.pretrain_small_steps > 0 and (small / "state").exists() else None
        cfg = self._pretrain_cfg("svd-pretrain", p.pretrain_size, p.pretrain_steps, p.pretrain_batch,
                                 p.pretrain_frame0_weight, p.pretrain_frames, p.pretrain_p_mean, p.pretrain_p_std)
        return train_denoise_stage("svd", cfg, init, vae_dir=str(self.vae_dir), checkpoints=None, scale=p.scale,
                                   progress=self.progress, image_encoder_dir=self.image_encoder_dir())

    def svd(self) -> dict[str, Any]:
        p = self.plan
        cfg = replace(self._denoise_cfg("svd", p.base, p.svd_steps, p.svd_batch), lr=p.finetune_lr,
                      frame0_weight=p.finetune_frame0_weight, probe_every=p.finetune_probe_every,
                      channel_weight_power=p.finetune_channel_weight_power)
        return train_denoise_stage("svd", cfg, str(self.runs / "svd-pretrain"), vae_dir=str(self.vae_dir),
                                   checkpoints=str(self.ckpt), scale=p.scale, progress=self.progress,
                                   size=p.base, image_encoder_dir=self.image_encoder_dir())

    def svd_512(self) -> dict[str, Any]:
        return {"folder": str(export_svd_512(self.ckpt, size=self.plan.lowres))}

    def lowres_ft(self) -> dict[str, Any]:
        p = self.plan
        cache = self._cache_dir(p.lowres)
        cfg = replace(self._denoise_cfg("lowres-ft", p.lowres, p.lowres_steps, p.lowres_batch,
                                        cache=str(cache) if (cache / "manifest.json").is_file() else None),
                      lr=p.finetune_lr, frame0_weight=p.finetune_frame0_weight, probe_every=p.finetune_probe_every,
                      channel_weight_power=p.finetune_channel_weight_power)
        # from the 128x64 phase, like `svd` (siblings): a finetune of `svd` would go 128x64 -> 256x144 -> 128x64,
        # and the two finetunes can run in either order (docs/training.md, session 13)
        pretrain = self.runs / "svd-pretrain"
        init = str(pretrain) if (pretrain / "state" / "ema.safetensors").exists() else str(self.ckpt / "svd")
        if p.lowres_steps == 0:
            return self._export_unchanged("lowres-ft", init, p.lowres)
        return train_denoise_stage("lowres-ft", cfg, init, vae_dir=str(self.vae_dir), checkpoints=str(self.ckpt),
                                   scale=p.scale, progress=self.progress, size=p.lowres,
                                   image_encoder_dir=self.image_encoder_dir())

    def _export_unchanged(self, slug: str, init: str, size: tuple[int, int]) -> dict[str, Any]:
        """Export a run's EMA (or a stage's weights) as ``slug`` with no training of its own."""
        unet, encoder, vae, _ = load_init(init, self.plan.scale, str(self.vae_dir), self.image_encoder_dir())
        trainer = Path(init) / "state" / "trainer.json"
        step = json.loads(trainer.read_text())["step"] if trainer.is_file() else None
        summary = {"stage": slug, "steps": 0, "init": init, "init_step": step, "size": list(size),
                   "note": f"the weights of {init} unchanged (no finetune of its own)"}
        folder = export_stage(slug, unet.float(), encoder.float(), vae.float(), self.ckpt, extra={"training": summary},
                              size=size, scale=self.plan.scale)
        return {**summary, "folder": str(folder)}

    def optimized_xattn(self) -> dict[str, Any]:
        pipe, record = self._parent("optimized-xattn")
        t = registry.Transform("optimized_cross_attention")
        unet = apply_transforms(pipe.unet, [t])
        return {"folder": str(self._export("optimized-xattn", unet, pipe, list(record.transforms) + [t],
                                           {"training": "none: exact rewrite of lowres-ft"},
                                           unet_from="lowres-ft"))}

    def adversarial_1step(self) -> dict[str, Any]:
        pipe, record = self._parent("adversarial-1step")
        cfg = self._adv_cfg("adversarial-1step", self.plan.adv_steps)
        res = self._adversarial("adversarial-1step", pipe.unet, pipe, cfg)
        summary = {"training": {"objective": _objective("adversarial (SF-V)", cfg), "config": asdict(cfg),
                                "last": self._last_log(res["log"])}}
        return {"folder": str(self._export("adversarial-1step", pipe.unet, pipe, list(record.transforms), summary))}

    def temporal_multiscale(self) -> dict[str, Any]:
        pipe, record = self._parent("temporal-multiscale")
        t = registry.Transform("temporal_multiscale", {"temporal_factor": 2, "spatial_factor": 1})
        unet = apply_transforms(pipe.unet, [t])
        cfg = self._adv_cfg("temporal-multiscale", self.plan.multiscale_steps)
        res = self._adversarial("temporal-multiscale", unet, pipe, cfg)
        summary = {"training": {"objective": _objective("adversarial (SF-V)", cfg), "config": asdict(cfg),
                                "last": self._last_log(res["log"])}}
        return {"folder": str(self._export("temporal-multiscale", unet, pipe, list(record.transforms) + [t],
                                           summary))}

    def temporal_pruning(self) -> dict[str, Any]:
        p = self.plan
        pipe, record = self._parent("temporal-pruning")
        unet = pipe.unet
        n_kept = registry.kept_count(num_temporal_blocks(unet), p.pruned_fraction)
        cfg = self._adv_cfg("temporal-pruning-gates", p.gates_steps, lr_extra=5e-2)
        gate_record = learn_gates(unet, n_kept, lambda **kw: self._adversarial("temporal-pruning", unet, pipe,
                                                                                cfg, **kw))
        res = {"log": gate_record.pop("train")["log"]}
        gate_record["pruned_fraction"] = p.pruned_fraction
        kept = gate_record["kept"]
        cfg2 = self._adv_cfg("temporal-pruning", p.prune_ft_steps)
        res2 = self._adversarial("temporal-pruning", unet, pipe, cfg2)
        t = registry.Transform("temporal_pruning", {"pruned_fraction": p.pruned_fraction, "kept": n_kept,
                                                    "total": gate_record["total"], "blocks": kept})
        summary = {"training": {"gates": {"config": asdict(cfg), "last": self._last_log(res["log"])},
                                "finetune": {"config": asdict(cfg2), "last": self._last_log(res2["log"])}}}
        folder = self._export("temporal-pruning", unet, pipe, list(record.transforms) + [t], summary)
        (folder / "gates.json").write_text(json.dumps(gate_record, indent=1))
        return {"folder": str(folder), "kept": kept}

    def channel_funnels(self) -> dict[str, Any]:
        p = self.plan
        pipe, record = self._parent("channel-funnels")
        unet = add_funnels(pipe.unet, p.fun_factor, init="csi")
        cfg = self._adv_cfg("channel-funnels", p.funnel_steps)
        res = self._adversarial("channel-funnels", unet, pipe, cfg)
        merge_funnels(unet)
        t = registry.Transform("channel_funnels", {"fun_factor": p.fun_factor, "init": "csi", "merged": True})
        summary = {"training": {"objective": _objective("adversarial with separate funnels, then merged", cfg),
                                "config": asdict(cfg),
                                "last": self._last_log(res["log"])}}
        return {"folder": str(self._export("channel-funnels", unet, pipe, list(record.transforms) + [t], summary))}

    def teacher_pairs(self) -> dict[str, Any]:
        """The teacher's samples for distillation, computed once (only when the plan distils)."""
        if self.plan.adv_distill_weight <= 0:
            return {"skipped": True, "note": "Plan.adv_distill_weight is 0: the pure adversarial recipe"}
        pipe, _ = load_stage(self.ckpt / "optimized-xattn")
        manifest = build_pairs(self._pairs_config(), pipe.unet, pipe.vae, pipe.image_encoder, progress=self.progress)
        return {"pairs": str(self._pairs_dir()), "shards": manifest["shards"], "seconds": manifest["seconds"]}

    def mobilevd_hd(self) -> dict[str, Any]:
        p = self.plan
        pipe, record = self._parent("mobilevd-hd")
        cfg = self._adv_cfg("mobilevd-hd", p.hd_steps, size=p.base, batch=p.hd_batch)
        res = self._adversarial("mobilevd-hd", pipe.unet, pipe, cfg)
        summary = {"training": {"objective": _objective("adversarial at the base resolution", cfg),
                                "config": asdict(cfg),
                                "last": self._last_log(res["log"])}}
        return {"folder": str(self._export("mobilevd-hd", pipe.unet, pipe, list(record.transforms), summary))}

    # ------------------------------------------------------------------------------------------------ run
    def finished(self, step: str, explicit: bool = False) -> bool:
        """Whether ``step`` needs no work. A pretraining phase is skipped once `svd` is exported (it exists only
        to make `svd`), unless it is asked for by name (``explicit``): then only its own run counts."""
        if step == "vae":
            return (self.vae_dir / "diffusion_pytorch_model.safetensors").exists()
        if step == "latent-cache-small":
            return self._cache_done(self.plan.pretrain_small_size, self.plan.cache_small_clips)
        if step == "latent-cache":
            return self._cache_done(self.plan.pretrain_size, self.plan.cache_clips)
        if step == "teacher-pairs":
            cfg, path = self._pairs_config(), self._pairs_dir() / "manifest.json"
            return self.plan.adv_distill_weight <= 0 or (
                path.is_file() and json.loads(path.read_text())["shards"] * cfg.shard >= cfg.pairs)
        if step in ("svd-pretrain-small", "svd-pretrain"):
            return (self.runs / step / "config.json").exists() or (not explicit and _done(self.ckpt / "svd"))
        return _done(self.ckpt / step)

    def run(self, only: list[str] | None = None, until: str | None = None) -> dict[str, Any]:
        steps = list(ORDER)
        if until:
            steps = steps[: steps.index(until) + 1]
        if only:
            steps = [s for s in steps if s in only]
        for i, step in enumerate(steps):
            if self.finished(step, explicit=bool(only) and step in only):
                print(_progress_note(step, f"done already ({i + 1}/{len(steps)})"), flush=True)
                continue
            print(_progress_note(step, f"running ({i + 1}/{len(steps)})"), flush=True)
            t0 = time.time()
            result = getattr(self, step.replace("-", "_"))()
            self.report[step] = {"seconds": time.time() - t0, **{k: v for k, v in result.items()
                                                                 if k not in ("ema_unet", "ema_image_encoder")}}
            if result.get("finished") is False:  # out of time (Plan.max_seconds): the later steps need this one
                print(_progress_note(step, f"stopped at step {result.get('stopped_at')}, resumable",
                                     time.time() - t0), flush=True)
                break
            print(_progress_note(step, "finished", time.time() - t0), flush=True)
        return self.report


def build_path(plan: Plan, checkpoints: str | Path = "checkpoints", runs: str | Path = "runs",
               only: list[str] | None = None, until: str | None = None, progress: bool = True) -> dict[str, Any]:
    return PathBuilder(plan, checkpoints, runs, progress).run(only=only, until=until)


__all__ = ["ORDER", "PathBuilder", "Plan", "build_path"]
