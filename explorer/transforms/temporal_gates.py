"""Temporal block gates and pruning (MobileVD, docs/paper.md §3 "temporal block pruning", Table 6, Figure 4).

Every temporal block of the SVD UNet is blended with its spatial branch by an ``AlphaBlender``:
``y = a*x_s + (1-a)*x_t``. Rewritten as a gated residual, ``y = x_s + z*(1-a)*(x_t - x_s)`` with a gate
``z in {0, 1}``: ``z = 1`` is the original block, ``z = 0`` removes the temporal branch entirely.

Temporal blocks, in a fixed order = the order the UNet's forward executes them (down blocks, mid block, up
blocks; inside a block resnet j before attention j, the mid block runs resnet 0, attention 0, resnet 1):
- ``resnet``: the ``TemporalResnetBlock`` (``temporal_res_block``) of a ``SpatioTemporalResBlock`` with its
  ``time_mixer``;
- ``transformer``: one ``TemporalBasicTransformerBlock`` (``temporal_transformer_blocks.k``) of a
  ``TransformerSpatioTemporalModel``. Such a model has ONE ``time_mixer`` shared by all its layers: each layer
  gets its own gate, the blend weight is the shared one; ``time_pos_embed``/``time_proj``/``time_mixer`` are
  removed only when all layers of that model are pruned. (SVD has one layer per model.)
Full SVD: 22 resnet + 16 transformer = 38 blocks (the micro/tiny configs have the same layout).

Pieces: :func:`temporal_blocks` (enumeration + metadata), :class:`TemporalGates` (learnable importances ->
inclusion probabilities -> exactly-n sampling with a straight-through estimator), :func:`prune_temporal_blocks`
(delete unselected blocks: no parameters, no compute), the L1-on-blend-weights baseline, per-block FLOPs and
:func:`default_kept_blocks`. The scheme and its proofs: docs/temporal_gates.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from diffusers.models.resnet import AlphaBlender, SpatioTemporalResBlock
from diffusers.models.transformers.transformer_temporal import (
    TransformerSpatioTemporalModel,
    TransformerTemporalModelOutput,
)
from torch import nn

Kind = Literal["resnet", "transformer"]
Side = Literal["down", "mid", "up"]
GateMode = Literal["open", "sampled", "fixed"]

# ----------------------------------------------------------------------------------------------------------
# Enumeration


@dataclass(frozen=True)
class TemporalBlockInfo:
    """One temporal block: where it lives and what it is."""

    index: int  # position in the fixed order (forward execution order)
    path: str  # module path of the temporal block itself
    kind: Kind
    level: int | str  # 0 (full resolution) .. L-1, or 'mid'
    side: Side
    container: str  # path of the SpatioTemporalResBlock / TransformerSpatioTemporalModel holding it
    mixer_path: str  # path of its AlphaBlender (shared by the layers of a transformer model)
    layer: int  # layer index inside a transformer model (0 for resnets)
    channels: int
    present: bool = True  # False once pruned

    @property
    def param_paths(self) -> tuple[str, ...]:
        """Module paths whose parameters belong to this block alone (shared transformer parts excluded)."""
        if self.kind == "resnet":
            return (self.path, self.mixer_path)
        return (self.path,)

    @property
    def label(self) -> str:
        lvl = "mid" if self.level == "mid" else f"L{self.level}"
        return f"{self.index:02d} {self.side}-{lvl} {self.kind}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "path": self.path, "kind": self.kind, "level": self.level, "side": self.side,
            "container": self.container, "mixer_path": self.mixer_path, "layer": self.layer,
            "channels": self.channels, "present": self.present,
        }


def _containers(unet: nn.Module) -> Iterator[tuple[str, nn.Module, int | str, Side]]:
    """(path, container, level, side) for every resnet/transformer container, in forward execution order."""
    n_levels = len(unet.down_blocks)
    for i, block in enumerate(unet.down_blocks):
        attns = getattr(block, "attentions", None)
        for j, res in enumerate(block.resnets):
            yield f"down_blocks.{i}.resnets.{j}", res, i, "down"
            if attns is not None and j < len(attns):
                yield f"down_blocks.{i}.attentions.{j}", attns[j], i, "down"
    mid = unet.mid_block
    yield "mid_block.resnets.0", mid.resnets[0], "mid", "mid"
    for j, attn in enumerate(mid.attentions):
        yield f"mid_block.attentions.{j}", attn, "mid", "mid"
        yield f"mid_block.resnets.{j + 1}", mid.resnets[j + 1], "mid", "mid"
    for i, block in enumerate(unet.up_blocks):
        attns = getattr(block, "attentions", None)
        level = n_levels - 1 - i
        for j, res in enumerate(block.resnets):
            yield f"up_blocks.{i}.resnets.{j}", res, level, "up"
            if attns is not None and j < len(attns):
                yield f"up_blocks.{i}.attentions.{j}", attns[j], level, "up"


def _n_layers(model: TransformerSpatioTemporalModel) -> int:
    return len(model.transformer_blocks)


def temporal_blocks(unet: nn.Module, include_pruned: bool = False) -> list[TemporalBlockInfo]:
    """All temporal blocks of ``unet`` in the fixed order (see module docstring), with metadata.

    Indices refer to the unpruned architecture, so they stay valid after :func:`prune_temporal_blocks`;
    pruned blocks are listed (``present=False``) only with ``include_pruned=True``.
    """
    infos: list[TemporalBlockInfo] = []
    for path, module, level, side in _containers(unet):
        if isinstance(module, SpatioTemporalResBlock):
            present = module.temporal_res_block is not None
            channels = module.spatial_res_block.out_channels
            infos.append(TemporalBlockInfo(
                len(infos), f"{path}.temporal_res_block", "resnet", level, side, path, f"{path}.time_mixer", 0,
                channels, present,
            ))
        elif isinstance(module, TransformerSpatioTemporalModel):
            tblocks = module.temporal_transformer_blocks
            for k in range(_n_layers(module)):
                present = tblocks is not None and tblocks[k] is not None
                infos.append(TemporalBlockInfo(
                    len(infos), f"{path}.temporal_transformer_blocks.{k}", "transformer", level, side, path,
                    f"{path}.time_mixer", k, module.in_channels, present,
                ))
    return infos if include_pruned else [b for b in infos if b.present]


def temporal_block_paths(unet: nn.Module) -> list[str]:
    """Module paths of the (present) temporal blocks, in the fixed order."""
    return [b.path for b in temporal_blocks(unet)]


def num_temporal_blocks(unet: nn.Module) -> int:
    """Number of temporal blocks of the unpruned architecture (38 for SVD)."""
    return len(temporal_blocks(unet, include_pruned=True))


# ----------------------------------------------------------------------------------------------------------
# Inclusion probabilities and exactly-n sampling (proofs in docs/temporal_gates.md)


def project_capped_simplex(s: torch.Tensor, n: float, iters: int = 80) -> torch.Tensor:
    """Euclidean projection of ``s`` onto {p : 0 <= p_i <= 1, sum p = n} (differentiable).

    The projection is ``p_i = clip(s_i - tau, 0, 1)`` with the unique-sum threshold ``tau``. ``tau`` is
    located by bisection without gradient, then recomputed from the active set
    ``tau = (sum_{free} s_i - (n - #capped)) / #free`` so autograd yields the projection's exact Jacobian
    (``dp_i/ds_j = [i=j] - 1/#free`` on free coordinates, 0 elsewhere).
    """
    count = s.numel()
    if not 0 <= n <= count:
        raise ValueError(f"n={n} must lie in [0, {count}]")
    if n == count:
        return torch.ones_like(s) + 0 * s
    if n == 0:
        return torch.zeros_like(s) + 0 * s
    with torch.no_grad():
        sd = s.detach().double()
        lo, hi = sd.min() - 1.0, sd.max()
        for _ in range(iters):
            mid = (lo + hi) / 2
            if torch.clamp(sd - mid, 0, 1).sum() > n:
                lo = mid
            else:
                hi = mid
        tau0 = (lo + hi) / 2
        shifted = sd - tau0
        capped = shifted >= 1
        free = (shifted > 0) & ~capped
    if bool(free.any()):
        tau = (s[free].sum() - (n - capped.sum().to(s.dtype))) / free.sum().to(s.dtype)
    else:
        tau = tau0.to(s.dtype)
    return torch.clamp(s - tau, 0.0, 1.0)


def systematic_sample(p: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of exactly ``n`` distinct items with P(i selected) = p_i (needs 0 <= p_i <= 1, sum p = n).

    Systematic sampling on a random permutation: lay the items' intervals [C_{k-1}, C_k) of length p end to
    end on [0, n) and select the items hit by the points u, u+1, ..., u+n-1, u ~ U[0, 1).
    """
    count = p.numel()
    pd = p.detach().double().cpu().clamp(0.0, 1.0)
    perm = torch.randperm(count, generator=generator)
    cum = pd[perm].cumsum(0)
    cum = cum * (n / cum[-1])  # remove float drift of sum(p) so the points u+m always fall inside [0, C_N)
    u = torch.rand((), generator=generator, dtype=torch.float64)
    points = u + torch.arange(n, dtype=torch.float64)
    pos = torch.searchsorted(cum, points, right=True).clamp(max=count - 1)
    chosen = perm[pos]
    if torch.unique(chosen).numel() != n:  # only reachable through float rounding; keep the count exact
        rest = [int(i) for i in torch.argsort(pd, descending=True) if int(i) not in set(chosen.tolist())]
        chosen = torch.tensor(sorted(set(chosen.tolist())) + rest)[:n]
    return chosen.to(p.device)


def _logit(x: float) -> float:
    x = min(max(x, 1e-6), 1 - 1e-6)
    return math.log(x / (1 - x))


class TemporalGates(nn.Module):
    """Controller of the gates of one UNet: learnable importances ``q`` -> probabilities -> gate values.

    Modes: ``open`` (every block on, the original UNet), ``sampled`` (training: exactly ``n`` gates open per
    forward, straight-through gradients to ``q``; in ``eval()`` the deterministic top-``n`` by importance),
    ``fixed`` (a given 0/1 mask; closed blocks are skipped, no compute). Attach with :meth:`attach`; a forward
    pre-hook on the UNet draws a fresh sample for every UNet evaluation.
    """

    def __init__(self, num_blocks: int, n: int, mode: GateMode = "sampled", seed: int | None = None) -> None:
        super().__init__()
        if not 0 < n <= num_blocks:
            raise ValueError(f"n={n} must be in [1, {num_blocks}]")
        self.num_blocks = num_blocks
        self.n = n
        self.importance = nn.Parameter(torch.full((num_blocks,), _logit(n / num_blocks)))
        self.register_buffer("mask", torch.ones(num_blocks))
        self.mode: GateMode = mode
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.blocks: list[TemporalBlockInfo] = []
        self._z: list[Any] | None = None
        self._hook: Any = None

    # -- probabilities and samples
    def probabilities(self) -> torch.Tensor:
        """Inclusion probabilities p = Proj(sigmoid(q)): 0 <= p_i <= 1, sum p = n."""
        return project_capped_simplex(torch.sigmoid(self.importance), float(self.n))

    def sample(self) -> torch.Tensor:
        """A straight-through gate vector: forward values in {0,1} (exactly n ones), gradient d z_i / d p_i = 1."""
        p = self.probabilities()
        idx = systematic_sample(p, self.n, self.generator)
        hard = torch.zeros_like(p)
        hard[idx] = 1.0
        return hard + (p - p.detach())  # exactly hard in the forward, d z / d p = 1 in the backward

    def top_n(self) -> list[int]:
        """The ``n`` blocks with the highest importance (ties: lower index), sorted."""
        values = self.importance.detach().tolist()
        order = sorted(range(self.num_blocks), key=lambda i: (-values[i], i))
        return sorted(order[: self.n])

    def kept_blocks(self) -> list[int]:
        """Blocks kept at inference (the deterministic choice of :meth:`top_n`)."""
        return self.top_n()

    # -- modes
    def set_mode(self, mode: GateMode, mask: Sequence[float] | torch.Tensor | None = None) -> TemporalGates:
        """Switch mode; ``fixed`` takes a 0/1 ``mask`` over all blocks (or a list of kept indices)."""
        if mode not in ("open", "sampled", "fixed"):
            raise ValueError(f"unknown gate mode {mode!r}")
        if mode == "fixed":
            if mask is None:
                raise ValueError("mode 'fixed' needs a mask")
            m = torch.as_tensor(mask, dtype=torch.float32)
            if m.numel() != self.num_blocks:  # a list of kept indices
                idx = m.long()
                m = torch.zeros(self.num_blocks)
                m[idx] = 1.0
            self.mask.copy_(m.to(self.mask.device))
        self.mode = mode
        return self

    def begin_step(self) -> None:
        """Decide the gate values for the next UNet evaluation (called by the forward pre-hook)."""
        if self.mode == "open":
            self._z = None
        elif self.mode == "fixed":
            self._z = [float(v) for v in self.mask.tolist()]
        elif self.training:
            z = self.sample()
            self._z = [z[i] for i in range(self.num_blocks)]
        else:
            kept = set(self.top_n())
            self._z = [1.0 if i in kept else 0.0 for i in range(self.num_blocks)]

    def gate(self, index: int) -> torch.Tensor | float | None:
        """Gate value of block ``index`` for the current evaluation (None = open, the original blend)."""
        return None if self._z is None else self._z[index]

    def open_blocks(self) -> list[int]:
        """Indices whose gate is open in the current evaluation (all when in ``open`` mode)."""
        if self._z is None:
            return list(range(self.num_blocks))
        return [i for i, v in enumerate(self._z) if float(v.detach() if torch.is_tensor(v) else v) > 0.5]

    # -- wiring
    @classmethod
    def attach(cls, unet: nn.Module, n: int, mode: GateMode = "sampled", seed: int | None = None) -> TemporalGates:
        """Create gates for every present temporal block of ``unet`` and wire them in (parameter-free for the UNet).

        The UNet's state dict is unchanged (the gated blocks are parameter-free subclasses); the importances
        live in the returned controller. Blocks already pruned get no gate.
        """
        blocks = temporal_blocks(unet)
        gates = cls(len(blocks), n, mode=mode, seed=seed)
        gates.blocks = blocks
        modules = dict(unet.named_modules())
        for slot, info in enumerate(blocks):
            container = modules[info.container]
            _make_gated(container)
            object.__setattr__(container, "_gates", gates)
            container._gate_slots[info.layer] = slot
        gates._hook = unet.register_forward_pre_hook(gates._pre_hook)
        gates.begin_step()
        return gates

    def _pre_hook(self, _module: nn.Module, _args: Any) -> None:
        self.begin_step()

    def detach_from(self, unet: nn.Module) -> None:
        """Remove the hook and the gate references (the blocks keep their original blend)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        for module in unet.modules():
            if isinstance(module, (GatedSpatioTemporalResBlock, GatedTransformerSpatioTemporalModel)):
                object.__setattr__(module, "_gates", None)


# ----------------------------------------------------------------------------------------------------------
# Gated / prunable blocks (parameter-free subclasses: state-dict keys unchanged)


def _blend_weight(mixer: AlphaBlender, image_only_indicator: torch.Tensor | None, ndims: int, dtype: torch.dtype):
    """The temporal branch's weight (1 - a) of an AlphaBlender, respecting its merge strategy and switch."""
    alpha = mixer.get_alpha(image_only_indicator, ndims).to(dtype)
    if mixer.switch_spatial_to_temporal_mix:
        alpha = 1.0 - alpha
    return 1.0 - alpha


def gated_blend(
    mixer: AlphaBlender,
    x_spatial: torch.Tensor,
    x_temporal: torch.Tensor,
    image_only_indicator: torch.Tensor | None,
    z: torch.Tensor | float,
) -> torch.Tensor:
    """y = x_s + z * (1 - a) * (x_t - x_s): the AlphaBlender in gated residual form."""
    w = _blend_weight(mixer, image_only_indicator, x_spatial.ndim, x_spatial.dtype)
    if torch.is_tensor(z):
        z = z.to(device=x_spatial.device, dtype=x_spatial.dtype)
    return x_spatial + z * w * (x_temporal - x_spatial)


class GatedSpatioTemporalResBlock(SpatioTemporalResBlock):
    """SpatioTemporalResBlock with a gate on its temporal branch; ``temporal_res_block=None`` = pruned."""

    _gates: TemporalGates | None
    _gate_slots: dict[int, int]

    def _gate(self) -> torch.Tensor | float | None:
        gates = getattr(self, "_gates", None)
        slot = self._gate_slots.get(0)
        return None if gates is None or slot is None else gates.gate(slot)

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor | None = None,
        image_only_indicator: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.temporal_res_block is None:  # pruned: spatial branch only
            return self.spatial_res_block(hidden_states, temb)
        z = self._gate()
        if z is None:
            return super().forward(hidden_states, temb, image_only_indicator)
        if not torch.is_tensor(z) and z == 0.0:  # closed and not learning: skip the temporal compute
            return self.spatial_res_block(hidden_states, temb)
        num_frames = image_only_indicator.shape[-1]
        hidden_states = self.spatial_res_block(hidden_states, temb)
        batch_frames, channels, height, width = hidden_states.shape
        batch_size = batch_frames // num_frames
        x_s = hidden_states[None, :].reshape(batch_size, num_frames, channels, height, width).permute(0, 2, 1, 3, 4)
        if temb is not None:
            temb = temb.reshape(batch_size, num_frames, -1)
        x_t = self.temporal_res_block(x_s, temb)
        y = gated_blend(self.time_mixer, x_s, x_t, image_only_indicator, z)
        return y.permute(0, 2, 1, 3, 4).reshape(batch_frames, channels, height, width)


class GatedTransformerSpatioTemporalModel(TransformerSpatioTemporalModel):
    """TransformerSpatioTemporalModel with one gate per temporal layer; a ``None`` layer = pruned."""

    _gates: TemporalGates | None
    _gate_slots: dict[int, int]

    def _gate(self, layer: int) -> torch.Tensor | float | None:
        gates = getattr(self, "_gates", None)
        slot = self._gate_slots.get(layer)
        return None if gates is None or slot is None else gates.gate(slot)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        image_only_indicator: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> TransformerTemporalModelOutput | tuple[torch.Tensor]:
        n_layers = len(self.transformer_blocks)
        tblocks = self.temporal_transformer_blocks
        gates = [self._gate(k) for k in range(n_layers)]
        pruned = [tblocks is None or tblocks[k] is None for k in range(n_layers)]
        if not any(pruned) and all(g is None for g in gates):
            return super().forward(hidden_states, encoder_hidden_states, image_only_indicator, return_dict)
        run = [not pruned[k] and not (not torch.is_tensor(gates[k]) and gates[k] == 0.0) for k in range(n_layers)]

        batch_frames, _, height, width = hidden_states.shape
        num_frames = image_only_indicator.shape[-1]
        batch_size = batch_frames // num_frames
        residual = hidden_states
        hidden_states = self.norm(hidden_states)
        inner_dim = hidden_states.shape[1]
        hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch_frames, height * width, inner_dim)
        hidden_states = self.proj_in(hidden_states)

        if any(run):
            time_context = encoder_hidden_states
            first = time_context[None, :].reshape(batch_size, num_frames, -1, time_context.shape[-1])[:, 0]
            time_context = first[:, None].broadcast_to(batch_size, height * width, first.shape[-2], first.shape[-1])
            time_context = time_context.reshape(batch_size * height * width, -1, time_context.shape[-1])
            frames_emb = torch.arange(num_frames, device=hidden_states.device).repeat(batch_size, 1).reshape(-1)
            t_emb = self.time_proj(frames_emb).to(dtype=hidden_states.dtype)
            emb = self.time_pos_embed(t_emb)[:, None, :]

        for k, block in enumerate(self.transformer_blocks):
            hidden_states = block(hidden_states, encoder_hidden_states=encoder_hidden_states)
            if not run[k]:
                continue
            mix = tblocks[k](hidden_states + emb, num_frames=num_frames, encoder_hidden_states=time_context)
            if gates[k] is None:
                hidden_states = self.time_mixer(
                    x_spatial=hidden_states, x_temporal=mix, image_only_indicator=image_only_indicator
                )
            else:
                hidden_states = gated_blend(self.time_mixer, hidden_states, mix, image_only_indicator, gates[k])

        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch_frames, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
        output = hidden_states + residual
        if not return_dict:
            return (output,)
        return TransformerTemporalModelOutput(sample=output)


def _make_gated(module: nn.Module) -> nn.Module:
    """Swap the class of a container to its gated/prunable subclass (in place; parameters untouched)."""
    if isinstance(module, SpatioTemporalResBlock) and not isinstance(module, GatedSpatioTemporalResBlock):
        module.__class__ = GatedSpatioTemporalResBlock
    elif isinstance(module, TransformerSpatioTemporalModel) and not isinstance(
        module, GatedTransformerSpatioTemporalModel
    ):
        module.__class__ = GatedTransformerSpatioTemporalModel
    if "_gate_slots" not in module.__dict__:
        object.__setattr__(module, "_gate_slots", {})
    return module


# ----------------------------------------------------------------------------------------------------------
# Pruning


def prune_temporal_blocks(unet: nn.Module, keep: Sequence[int]) -> nn.Module:
    """Delete every temporal block whose index (in :func:`temporal_blocks` order) is not in ``keep``; in place.

    Pruned resnet blocks lose ``temporal_res_block`` and ``time_mixer``; pruned transformer layers lose their
    ``TemporalBasicTransformerBlock``; a transformer model with no temporal layer left also loses
    ``time_pos_embed``, ``time_proj`` and ``time_mixer``. The forward skips them (spatial branch only), so they
    hold no parameters and cost no FLOPs. Kept blocks keep their original blend. Works on meta.
    """
    blocks = temporal_blocks(unet, include_pruned=True)
    keep_set = {int(i) for i in keep}
    bad = sorted(i for i in keep_set if not 0 <= i < len(blocks))
    if bad:
        raise ValueError(f"kept block indices {bad} out of range [0, {len(blocks)})")
    missing = sorted(i for i in keep_set if not blocks[i].present)
    if missing:
        raise ValueError(f"blocks {missing} are already pruned and cannot be kept")
    modules = dict(unet.named_modules())
    touched: dict[str, nn.Module] = {}
    for info in blocks:
        if info.index in keep_set or not info.present:
            continue
        container = _make_gated(modules[info.container])
        touched[info.container] = container
        if info.kind == "resnet":
            container.temporal_res_block = None
            container.time_mixer = None
        else:
            container.temporal_transformer_blocks[info.layer] = None
    for container in touched.values():
        if isinstance(container, TransformerSpatioTemporalModel):
            if all(b is None for b in container.temporal_transformer_blocks):
                container.temporal_transformer_blocks = None
                container.time_pos_embed = None
                container.time_proj = None
                container.time_mixer = None
    unet.pruned_temporal_blocks = sorted(b.index for b in blocks if b.index not in keep_set or not b.present)
    return unet


def gates_from_mask(unet: nn.Module, keep: Sequence[int]) -> TemporalGates:
    """Gates in ``fixed`` mode with exactly the blocks ``keep`` open (the gated twin of pruning)."""
    gates = TemporalGates.attach(unet, n=max(1, len(keep)), mode="fixed")
    gates.set_mode("fixed", [1.0 if i in set(keep) else 0.0 for i in range(gates.num_blocks)])
    gates.begin_step()
    return gates


# ----------------------------------------------------------------------------------------------------------
# L1-on-blend-weights baseline (Table 6)


def temporal_weights(unet: nn.Module) -> dict[int, torch.Tensor]:
    """Per block, the weight (1 - a_i) the blend gives the temporal branch on video frames."""
    modules = dict(unet.named_modules())
    out: dict[int, torch.Tensor] = {}
    for info in temporal_blocks(unet):
        mixer: AlphaBlender = modules[info.mixer_path]
        if mixer.merge_strategy == "fixed":
            alpha = mixer.mix_factor.reshape(())
        else:
            alpha = torch.sigmoid(mixer.mix_factor).reshape(())
        if mixer.switch_spatial_to_temporal_mix:
            alpha = 1.0 - alpha
        out[info.index] = 1.0 - alpha
    return out


def l1_blend_penalty(unet: nn.Module) -> torch.Tensor:
    """L1 penalty sum_i |1 - a_i| over the temporal blocks (pushes blends towards the spatial branch)."""
    weights = list(temporal_weights(unet).values())
    return torch.stack([w.abs() for w in weights]).sum()


def l1_kept_blocks(unet: nn.Module, n: int) -> list[int]:
    """The ``n`` blocks with the largest temporal weight (1 - a_i): prune the smallest (the L1 baseline)."""
    weights = {i: float(w.detach()) for i, w in temporal_weights(unet).items()}
    order = sorted(weights, key=lambda i: (-weights[i], i))
    return sorted(order[:n])


# ----------------------------------------------------------------------------------------------------------
# The default choice (the FLOPs of each block: explorer.flops.block_costs, the one cost model)


def default_kept_blocks(unet: nn.Module, n: int) -> list[int]:
    """The documented deterministic choice of ``n`` kept blocks where no trained importances exist.

    Heuristic ("temporal attention at the finest grid first"): rank transformer (temporal attention) blocks
    before resnet (temporal conv) blocks; within a kind, finer levels first (level 0, 1, ..., mid last);
    then the up (decoder) side before the down side; then forward order. Keep the first ``n``.
    Rationale: temporal attention is the only block with a receptive field over all frames, and under
    temporal multiscaling level 0 is the only level that still sees every frame, so its temporal mixing is
    the least redundant. On full SVD at 512x256x14 with temporal multiscaling, n = 11 of 38 keeps all five
    level-0 and five level-1 temporal transformers plus the first level-2 decoder one: 4.67 TFLOPs by
    torch's counter (the paper's learned choice: 4.64; the range over all choices of 11: 3.44-4.67).
    Needs no weight values, so it works on meta.
    """
    infos = temporal_blocks(unet)
    if not 0 <= n <= len(infos):
        raise ValueError(f"cannot keep {n} of {len(infos)} temporal blocks")
    n_levels = len(unet.down_blocks)

    def depth(info: TemporalBlockInfo) -> int:
        return n_levels if info.level == "mid" else int(info.level)

    ranked = sorted(infos, key=lambda b: (b.kind != "transformer", depth(b), b.side != "up", b.index))
    return sorted(b.index for b in ranked[:n])
