"""Plain Vision Transformer encoder for transfer to dense prediction (pure PyTorch).

One class covers the layouts the MAE / ViTDet / BEiT papers transfer:

- classic ViT (timm ``VisionTransformer``; MAE, DeiT, MoCo v3 weights): global attention, cls
  token, absolute position embedding;
- ViTDet (Detectron2 ``ViT``): window attention with a few global blocks, decomposed relative
  position, no cls token, the absolute position embedding kept at its pre-training grid (with its
  cls slot, ``pretrain_use_cls_token``) and resized to the input grid on the fly;
- BEiT (timm ``Beit``): q/v bias, layer scale, relative position bias per block or shared;
- DINOv2 (timm ``vit_*_patch14_dinov2`` / ``*_reg4_dinov2``): patch 14, layer scale, register
  tokens (``reg_token``) with a position embedding over the patches only, SwiGLU MLP (giant);
- SAM's image encoder (timm ``samvit_*``): ViTDet-like windows and decomposed relative positions,
  absolute positions for the 64x64 grid at 1024, no cls token, no final norm.

Parameter names are timm's (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.{i}.norm1``, ``attn.qkv`` / ``attn.q_bias`` / ``attn.v_bias``, ``attn.proj``,
``attn.relative_position_bias_table``, ``gamma_1`` / ``gamma_2``, ``norm2``, ``mlp.fc1`` /
``mlp.fc2``, ``norm``, ``rel_pos_bias`` for the shared BEiT table) plus Detectron2's
``attn.rel_pos_h`` / ``attn.rel_pos_w``, so those checkpoints load as they are.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .attention import Attention, RelativePositionBias
from .mlp import MLP_LAYERS, Mlp, SwiGLU  # noqa: F401  (Mlp, SwiGLU: re-exported)
from .pos_embed import Size2, resize_abs_pos_embed, to_2tuple

__all__ = ["VisionTransformer", "Block", "PRESETS", "create_vit", "vitdet_global_blocks"]


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: ``(B, 3, H, W) -> (B, H/p * W/p, C)`` and ``(H/p, W/p)``."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), hw


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``p`` (train only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """Pre-norm transformer block; global or window attention (ViTDet padding rule)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qv_bias: bool = False,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        window_size: int = 0,
        rel_pos: Optional[str] = None,
        input_size: Optional[Size2] = None,
        layer_scale: Optional[float] = None,
        mlp_layer: str = "gelu",
        attn_impl: str = "sdpa",
    ):
        """
        Args:
            dim: channels.
            num_heads: attention heads.
            mlp_ratio: MLP hidden size / ``dim``.
            qkv_bias, qv_bias, rel_pos: see :class:`~mae_transfer.models.attention.Attention`.
            drop_path: stochastic depth rate of both residual branches.
            norm_eps: LayerNorm epsilon.
            window_size: window side; 0 = global attention. The grid is zero-padded (after
                ``norm1``) to a multiple of the window, as Detectron2's ViTDet.
            input_size: patch grid of the model's ``img_size``; sizes relative tables of global
                blocks (window blocks size them from the window).
            layer_scale: initial value of the BEiT/CaiT ``gamma_1``/``gamma_2``; None = off.
            mlp_layer: ``"gelu"`` (``fc1 -> GELU -> fc2``) or ``"swiglu"`` (:class:`SwiGLU`, whose
                ``fc1`` has ``int(dim * mlp_ratio)`` outputs, split in two halves).
            attn_impl: ``"auto"``, ``"sdpa"`` or ``"flex"``; see :class:`Attention`.
        """
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qv_bias=qv_bias,
            rel_pos=rel_pos,
            input_size=input_size,
            window_size=window_size,
            attn_impl=attn_impl,
        )
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        if mlp_layer not in MLP_LAYERS:
            raise ValueError(f"mlp_layer must be one of {sorted(MLP_LAYERS)}, got {mlp_layer!r}.")
        self.mlp = MLP_LAYERS[mlp_layer](dim, int(dim * mlp_ratio))
        if layer_scale is not None:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(layer_scale)))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(
        self,
        x: torch.Tensor,
        hw: Tuple[int, int],
        num_prefix: int = 0,
        shared_bias: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``(B, P + h*w, C) -> (B, P + h*w, C)``; ``hw`` is the token grid, ``P = num_prefix``."""
        y = self.attn(self.norm1(x), hw, num_prefix, shared_bias)
        if self.gamma_1 is not None:
            y = self.gamma_1 * y
        x = x + self.drop_path(y)
        y = self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            y = self.gamma_2 * y
        return x + self.drop_path(y)


def vitdet_global_blocks(depth: int) -> Tuple[int, ...]:
    """ViTDet's global blocks: the last block of each quarter (B: 2,5,8,11; L: 5,11,17,23;
    H: 7,15,23,31)."""
    return tuple(depth // 4 * (i + 1) - 1 for i in range(4))


class VisionTransformer(nn.Module):
    """ViT encoder returning timm tokens (:meth:`forward_features`) or dense maps
    (:meth:`forward_maps`)."""

    def __init__(
        self,
        img_size: Size2 = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qv_bias: bool = False,
        pretrain_img_size: Size2 | None = 224,
        use_abs_pos: bool = True,
        use_cls_token: Optional[bool] = None,
        pretrain_use_cls_token: bool = True,
        window_size: int = 0,
        global_blocks: Optional[Sequence[int]] = None,
        rel_pos: Optional[str] = None,
        layer_scale: Optional[float] = None,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        final_norm: bool = True,
        grad_checkpointing: Union[bool, int] = False,
        out_indices: Optional[Sequence[int]] = None,
        num_reg_tokens: int = 0,
        no_embed_class: bool = False,
        pos_embed_antialias: bool = False,
        mlp_layer: str = "gelu",
        feature_stride: Optional[int] = None,
        attn_impl: str = "sdpa",
    ):
        """
        Args:
            img_size: input size ``int`` or ``(H, W)`` the model is built for: sizes the relative
                position tables of global blocks. Other input sizes work; tables and the absolute
                position embedding are resampled on the fly.
            patch_size: patch side ``p``; maps have stride ``p``.
            in_chans: image channels.
            embed_dim, depth, num_heads, mlp_ratio: transformer width, blocks, heads, MLP ratio.
            qkv_bias: bias on ``attn.qkv``. qv_bias: BEiT ``q_bias``/``v_bias`` instead.
            pretrain_img_size: ``int`` or ``(H, W)``; the absolute position embedding is stored
                (and learned) at this grid, ``pretrain_img_size // patch_size`` (``None``: the
                training grid ``img_size // feature_stride``), and resized
                (bicubic) to the input grid in the forward when they differ. Detectron2's ViTDet
                keeps the checkpoint's grid (224) and resizes in every forward; MMSeg/BEiT
                segmentation sets it to the crop size, so a checkpoint's table is resized once at
                load and crop-size inputs use it as is.
            use_abs_pos: add the absolute position embedding ``pos_embed``.
            use_cls_token: prepend ``cls_token``. Default: True for global attention, False when
                ``window_size > 0`` (windows have no cls token).
            pretrain_use_cls_token: ``pos_embed`` has a cls entry (``(1, 1 + N, C)``) even when
                ``use_cls_token`` is False — Detectron2 ``ViT(pretrain_use_cls_token=True)``, so
                ViTDet checkpoints load as they are. Forced on when ``use_cls_token``.
            window_size: window side for window attention; 0 = all blocks global.
            global_blocks: 0-based blocks with global attention when ``window_size > 0``; default
                :func:`vitdet_global_blocks`.
            rel_pos: ``None``, ``"decomposed"`` (ViTDet), ``"beit"`` (per-block BEiT bias) or
                ``"beit_shared"`` (one ``rel_pos_bias`` table for all blocks, global attention).
            layer_scale: initial ``gamma_1``/``gamma_2`` value (BEiT 0.1); None = no layer scale.
            drop_path: stochastic depth rate, increased linearly to this value over depth.
            norm_eps: LayerNorm epsilon.
            final_norm: keep the final ``norm`` (used by :meth:`forward_features` only). Set False
                when only :meth:`forward_maps` is used, so no parameter is left unused
                (DistributedDataParallel).
            grad_checkpointing: recompute activations in backward: True = every block, an int
                ``n`` = the first ``n`` blocks.
            out_indices: 0-based blocks whose outputs :meth:`forward_maps` returns; default the
                last block.
            num_reg_tokens: register tokens ``reg_token`` ``(1, R, C)`` after the cls token
                (DINOv2 with registers); they need global attention and ``no_embed_class``.
            no_embed_class: ``pos_embed`` covers the patches only and is added before the prefix
                tokens are prepended (timm ``no_embed_class``; DINOv2 with registers).
            pos_embed_antialias: resize ``pos_embed`` with antialiasing when shrinking it, as
                timm does for DINOv2 / SAM (False: Detectron2 / MMSeg numbers).
            mlp_layer: ``"gelu"`` or ``"swiglu"`` (DINOv2 giant), see :class:`Block`.
            feature_stride: resize the input by ``patch_size / feature_stride`` (bilinear) so the
                maps have this stride w.r.t. the given image, e.g. 16 for a patch-14 ViT under a
                pyramid built for stride 16 (a ``H x W`` input is seen at
                ``(H // 16) * 14 x (W // 16) * 14``). None = ``patch_size`` (no resize).
            attn_impl: kernel for attention with relative position terms: ``"auto"`` (flex
                attention, compiled, on CUDA when available; SDPA elsewhere), ``"sdpa"`` or
                ``"flex"`` (default ``"sdpa"``; flex is opt-in until checked on a GPU); see
                :class:`~mae_transfer.models.attention.Attention`.
        """
        super().__init__()
        if rel_pos not in (None, "decomposed", "beit", "beit_shared"):
            raise ValueError(
                f"rel_pos must be None, 'decomposed', 'beit' or 'beit_shared', got {rel_pos!r}."
            )
        if use_cls_token is None:
            use_cls_token = window_size <= 0
        if use_cls_token and window_size > 0:
            raise ValueError("use_cls_token=True needs global attention (window_size=0).")
        if rel_pos == "beit_shared" and window_size > 0:
            raise ValueError("rel_pos='beit_shared' needs global attention (window_size=0).")
        if num_reg_tokens and (window_size > 0 or not no_embed_class):
            raise ValueError("num_reg_tokens > 0 needs global attention (window_size=0) and "
                             "no_embed_class=True (registers have no position embedding).")
        self.img_size = to_2tuple(img_size)
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.window_size = window_size
        self.num_prefix_tokens = int(use_cls_token) + num_reg_tokens
        self.num_reg_tokens = num_reg_tokens
        self.pos_embed_antialias = pos_embed_antialias
        self.feature_stride = feature_stride or patch_size
        stride = self.feature_stride  # the token grid of an img_size input
        self.grid_size = (self.img_size[0] // stride, self.img_size[1] // stride)
        if pretrain_img_size is None:  # store the table at the training grid
            self.pretrain_grid = self.grid_size
        else:
            pretrain_hw = to_2tuple(pretrain_img_size)
            self.pretrain_grid = (pretrain_hw[0] // patch_size, pretrain_hw[1] // patch_size)
        if window_size > 0:
            self.global_blocks = tuple(
                vitdet_global_blocks(depth) if global_blocks is None else global_blocks
            )
        else:
            self.global_blocks = tuple(range(depth))
        self.out_indices = tuple(out_indices) if out_indices is not None else (depth - 1,)
        if any(not 0 <= i < depth for i in self.out_indices):
            raise ValueError(f"out_indices {self.out_indices} must lie in [0, {depth}).")
        self.grad_checkpointing = grad_checkpointing

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if use_cls_token else None
        self.reg_token = (
            nn.Parameter(torch.zeros(1, num_reg_tokens, embed_dim)) if num_reg_tokens else None
        )
        self.pos_embed_has_cls = bool(use_cls_token or pretrain_use_cls_token) and not no_embed_class
        if use_abs_pos:
            num_pos = self.pretrain_grid[0] * self.pretrain_grid[1] + int(self.pos_embed_has_cls)
            self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, embed_dim))
        else:
            self.pos_embed = None
        self.rel_pos_bias = (
            RelativePositionBias(self.grid_size, num_heads) if rel_pos == "beit_shared" else None
        )

        block_rel_pos = None if rel_pos == "beit_shared" else rel_pos
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qv_bias=qv_bias,
                drop_path=rates[i],
                norm_eps=norm_eps,
                window_size=0 if i in self.global_blocks else window_size,
                rel_pos=block_rel_pos,
                input_size=self.grid_size,
                layer_scale=layer_scale,
                mlp_layer=mlp_layer,
                attn_impl=attn_impl,
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm-style init: truncated normal (std .02) linears and position embedding, zero biases;
        relative tables stay zero."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=1e-6)

    def no_weight_decay(self) -> set:
        """Names of position tables and tokens (timm convention)."""
        return {"pos_embed", "cls_token", "reg_token"}

    # -- forward ---------------------------------------------------------------------------------

    def abs_pos_embed(self, hw: Tuple[int, int]) -> torch.Tensor:
        """``pos_embed`` resized to grid ``hw``: ``(1, 1 + h*w, C)`` when the cls token takes a
        position, else ``(1, h*w, C)`` (the cls entry dropped)."""
        num_prefix = int(self.pos_embed_has_cls)
        pos = resize_abs_pos_embed(self.pos_embed, hw, num_prefix, old_hw=self.pretrain_grid,
                                   antialias=self.pos_embed_antialias)  # fmt: skip
        if num_prefix and self.cls_token is None:
            pos = pos[:, 1:]
        return pos

    def resize_input(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` resized so the maps have stride ``feature_stride`` (see ``__init__``)."""
        if self.feature_stride == self.patch_size:
            return x
        s, p = self.feature_stride, self.patch_size
        size = (x.shape[-2] // s * p, x.shape[-1] // s * p)  # floor, as the patch convolution
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """``(B, 3, H, W) -> (B, P + h*w, C)``: [cls, registers, patches] (timm's order)."""
        x, hw = self.patch_embed(self.resize_input(x))
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token)
                  if t is not None]  # fmt: skip
        if self.pos_embed is not None:
            pos = self.abs_pos_embed(hw)
            if pos.shape[1] > hw[0] * hw[1]:  # the cls token has a position (no registers)
                return torch.cat(prefix + [x], dim=1) + pos, hw
            x = x + pos
        return torch.cat(prefix + [x], dim=1) if prefix else x, hw

    def _checkpointed(self, index: int) -> bool:
        flag = self.grad_checkpointing
        if isinstance(flag, bool):
            return flag
        return index < int(flag)

    def _run_blocks(
        self, x: torch.Tensor, hw: Tuple[int, int], last: int
    ) -> Dict[int, torch.Tensor]:
        """Run blocks ``0..last``; returns ``{i: tokens after block i}`` for ``out_indices`` and
        ``last``."""
        shared = None
        if self.rel_pos_bias is not None:
            shared = self.rel_pos_bias(hw, self.num_prefix_tokens).to(x.dtype)
        outs = {}
        for i, blk in enumerate(self.blocks[: last + 1]):
            if self._checkpointed(i) and torch.is_grad_enabled():
                x = checkpoint(blk, x, hw, self.num_prefix_tokens, shared, use_reentrant=False)
            else:
                x = blk(x, hw, self.num_prefix_tokens, shared)
            if i in self.out_indices or i == last:
                outs[i] = x
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """timm semantics: ``(B, 3, H, W) -> (B, P + H/p * W/p, C)`` after the final norm."""
        x, hw = self._embed(x)
        x = self._run_blocks(x, hw, self.depth - 1)[self.depth - 1]
        return self.norm(x)

    def forward_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Dense maps ``(B, C, H/p, W/p)`` after each block in ``out_indices`` (no final norm,
        cls token dropped), in ``out_indices`` order. Blocks after the last index are skipped."""
        x, hw = self._embed(x)
        outs = self._run_blocks(x, hw, max(self.out_indices))
        maps = []
        for i in self.out_indices:
            t = outs[i][:, self.num_prefix_tokens :]
            maps.append(t.transpose(1, 2).reshape(t.shape[0], -1, hw[0], hw[1]))
        return maps

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Same as :meth:`forward_maps`."""
        return self.forward_maps(x)


# -- presets -------------------------------------------------------------------------------------

# DINOv2 (timm vit_*_patch14_dinov2): layer scale 1e-5, position table of the 37x37 grid at 518
# (timm resizes it with antialiasing); with registers, the table covers the patches only.
_DINOV2 = dict(patch_size=14, layer_scale=1e-5, pretrain_img_size=518, img_size=518,
               pos_embed_antialias=True)
_DINOV2_SIZES = {
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
    # hidden 8192 = 2 x 4096 (DINOv2's SwiGLUFFNFused rounding of 2/3 * 4 * 1536)
    "giant": dict(embed_dim=1536, depth=40, num_heads=24, mlp_ratio=2.66667 * 2, mlp_layer="swiglu"),
}
_DINOV2_REG = {"": {}, "_reg4": dict(num_reg_tokens=4, no_embed_class=True)}
# SAM image encoder (timm samvit_*_patch16): 1024 input, 64x64 position table without cls entry,
# 14x14 windows, global blocks = last of each quarter (vitdet_global_blocks), decomposed relative
# positions, no final norm (SAM's neck follows, which is not part of this encoder).
_SAM = dict(img_size=1024, pretrain_img_size=1024, use_cls_token=False, pretrain_use_cls_token=False,
            window_size=14, rel_pos="decomposed", final_norm=False, pos_embed_antialias=True)
_SAM_SIZES = {
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
    "huge": dict(embed_dim=1280, depth=32, num_heads=16),
}

PRESETS: Dict[str, Dict] = {
    "vit_tiny_patch16": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small_patch16": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch16": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16": dict(embed_dim=1024, depth=24, num_heads=16),
    "vit_huge_patch16": dict(embed_dim=1280, depth=32, num_heads=16),
    "vit_huge_patch14": dict(embed_dim=1280, depth=32, num_heads=16, patch_size=14),
    **{f"vit_{size}_patch14{reg}_dinov2": dict(_DINOV2, **_DINOV2_SIZES[size], **_DINOV2_REG[reg])
       for size in _DINOV2_SIZES for reg in _DINOV2_REG},
    **{f"samvit_{size}_patch16": dict(_SAM, **dims) for size, dims in _SAM_SIZES.items()},
    # BEiT (timm beit_*_patch16_224): q/v bias, layer scale, per-block relative bias, no abs pos.
    "beit_base_patch16": dict(
        embed_dim=768, depth=12, num_heads=12, qv_bias=True, layer_scale=0.1,
        rel_pos="beit", use_abs_pos=False,
    ),
    "beit_large_patch16": dict(
        embed_dim=1024, depth=24, num_heads=16, qv_bias=True, layer_scale=1e-5,
        rel_pos="beit", use_abs_pos=False,
    ),
}  # fmt: skip


def create_vit(name: str, **overrides) -> VisionTransformer:
    """Build a preset (see ``PRESETS``) with keyword overrides of any constructor argument.

    Example (ViTDet-B)::

        create_vit("vit_base_patch16", img_size=1024, window_size=14, global_blocks=(2, 5, 8, 11),
                   rel_pos="decomposed", use_cls_token=False, drop_path=0.1)
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown ViT preset {name!r}; choose one of {sorted(PRESETS)}.")
    return VisionTransformer(**{**PRESETS[name], **overrides})
