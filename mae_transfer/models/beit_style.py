"""BEiT-style masked image modelling on this package's ViT (Bao et al., "BEiT", 2021, Sec. 2.2).

Unlike MAE, every token goes through the encoder: the patch embeddings of the masked patches are
replaced by a learned ``mask_token`` *before* the position embedding and the blocks; after the
final norm a linear ``lm_head`` predicts each masked patch's visual token. The encoder is
:class:`~mae_transfer.models.vit.VisionTransformer` itself, so its parameter names are timm's
(``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.*``, ``norm``) and a state dict
loads into any ViT of the same preset; ``mask_token`` and ``lm_head.*`` are the checkpoint
loader's known pretraining-only keys (ignored with their reason).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn as nn

from .vit import PRESETS, VisionTransformer

__all__ = ["BEiTStyleViT", "create_beit_style"]


class BEiTStyleViT(VisionTransformer):
    """A global-attention ViT with a class token, plus ``mask_token`` ``(1, 1, C)`` and
    ``lm_head`` (``C -> vocab_size``).

    Args:
        vocab_size: number of visual tokens.
        **vit_kwargs: :class:`VisionTransformer` arguments (a class token and global attention
            are required; windows, registers and ``no_embed_class`` are not supported here).

    Initialisation follows BEiT: truncated normal (0.02) tokens and linears, and each block's
    output projections (``attn.proj``, ``mlp.fc2``) scaled by ``1 / sqrt(2 * (i + 1))``.
    """

    def __init__(self, vocab_size: int, **vit_kwargs):
        super().__init__(**vit_kwargs)
        if self.cls_token is None or self.window_size > 0 or self.num_reg_tokens or \
                (self.pos_embed is not None and not self.pos_embed_has_cls):
            raise ValueError("BEiT-style pretraining needs a class token, global attention, no "
                             "register tokens and a position embedding with a class entry.")
        self.vocab_size = vocab_size
        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        self.lm_head = nn.Linear(self.embed_dim, vocab_size)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.lm_head.weight, std=0.02)
        nn.init.zeros_(self.lm_head.bias)
        with torch.no_grad():
            for i, block in enumerate(self.blocks):
                block.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
                block.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))

    def no_weight_decay(self) -> set:
        """Tokens and position table (those this model has): no weight decay."""
        return {name for name in super().no_weight_decay() | {"mask_token"} if getattr(self, name, None) is not None}

    def embed_masked(self, imgs: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """``(B, 3, H, W)``, mask ``(B, L)`` bool (True = masked) -> tokens ``(B, 1 + L, C)``:
        masked patch embeddings replaced by ``mask_token``, class token prepended, position
        embedding added (to masked positions too, as BEiT)."""
        x, hw = self.patch_embed(self.resize_input(imgs))
        if mask.shape != x.shape[:2]:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match the {x.shape[1]} patches "
                             f"of a batch of {x.shape[0]}.")
        w = mask.unsqueeze(-1).to(x.dtype)
        x = x * (1 - w) + self.mask_token.to(x.dtype) * w
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + self.abs_pos_embed(hw)
        return x, hw

    def forward(self, imgs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``(B, 3, H, W)``, mask ``(B, L)`` bool -> logits ``(M, vocab_size)`` of the ``M``
        masked patches, in ``mask.nonzero()`` order (image-major, then row-major)."""
        x, hw = self.embed_masked(imgs, mask)
        x = self._run_blocks(x, hw, self.depth - 1)[self.depth - 1]
        x = self.norm(x)[:, 1:]
        return self.lm_head(x[mask])


def create_beit_style(name: str, vocab_size: int, **overrides) -> BEiTStyleViT:
    """A ``create_vit`` preset (e.g. ``"vit_tiny_patch16"``) as a :class:`BEiTStyleViT`."""
    if name not in PRESETS:
        raise ValueError(f"Unknown ViT preset {name!r}; choose one of {sorted(PRESETS)}.")
    return BEiTStyleViT(vocab_size, **{**PRESETS[name], "use_cls_token": True, **overrides})
