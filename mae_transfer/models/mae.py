"""Masked autoencoder (He et al., "Masked Autoencoders Are Scalable Vision Learners", 2021).

The encoder is this package's ViT (its ``PatchEmbed`` and ``Block``) run on the visible patches
only, plus the cls token; a light decoder of the same blocks fills the masked positions with a
shared mask token and predicts their pixels. Parameter names and shapes are those of the official
``models_mae.py`` (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.*``, ``norm``,
``decoder_embed``, ``mask_token``, ``decoder_pos_embed``, ``decoder_blocks.*``, ``decoder_norm``,
``decoder_pred``), so checkpoints are interchangeable with the official code and the encoder part
loads into :class:`~mae_transfer.models.vit.VisionTransformer` as it is.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from .pos_embed import Size2, to_2tuple
from .vit import Block, PatchEmbed

__all__ = ["MaskedAutoencoderViT", "MAE_PRESETS", "create_mae", "sincos_pos_embed_2d",
           "random_masking", "patchify", "unpatchify"]


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """``(M,) -> (M, dim)``: ``[sin(p * w_k), cos(p * w_k)]`` with ``w_k = 10000^(-k / (dim/2))``."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.double().reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_pos_embed_2d(dim: int, grid: Size2, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding of MAE: ``(1, [1 +] h*w, dim)`` (float32).

    The first half of the channels encodes the column (x), the second half the row (y), in
    row-major token order; the cls entry is zero.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}.")
    h, w = to_2tuple(grid)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    emb = torch.cat([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float().unsqueeze(0)


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, H/p * W/p, p*p*C)``, pixels of a patch in (row, col, channel) order
    (the official MAE target layout)."""
    b, c, h, w = imgs.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}.")
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, patch_size: int, grid: Tuple[int, int], chans: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, h*w, p*p*C) -> (B, C, h*p, w*p)``."""
    b = x.shape[0]
    h, w = grid
    p = patch_size
    x = x.reshape(b, h, w, p, p, chans).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, chans, h * p, w * p)


def random_masking(
    x: torch.Tensor, mask_ratio: float, noise: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking by sorting uniform noise (small noise = keep).

    Args:
        x: ``(B, N, C)`` patch tokens.
        mask_ratio: share of patches removed; ``int(N * (1 - mask_ratio))`` are kept, truncated as
            in the official ``models_mae.py`` (49 patches at 0.6 keep 19, not 20).
        noise: optional ``(B, N)`` noise (default ``torch.rand``), for reproducible tests.

    Returns:
        visible tokens ``(B, K, C)`` in shuffled order, binary mask ``(B, N)`` (1 = removed) in
        the original order, and ``ids_restore`` ``(B, N)`` that unshuffles.
    """
    b, n, c = x.shape
    num_keep = int(n * (1 - mask_ratio))  # official truncation, same float expression
    if noise is None:
        noise = torch.rand(b, n, device=x.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :num_keep]
    visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, c))
    mask = torch.ones(b, n, device=x.device)
    mask[:, :num_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return visible, mask, ids_restore


class MaskedAutoencoderViT(nn.Module):
    """MAE with a ViT encoder and a light ViT decoder.

    ``forward(imgs)`` returns ``(loss, pred, mask)``: the mean squared error over the *masked*
    patches, the per-patch predictions ``(B, N, p*p*3)`` and the mask ``(B, N)`` (1 = removed).
    """

    def __init__(
        self,
        img_size: Size2 = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        norm_pix_loss: bool = True,
        mask_ratio: float = 0.75,
    ):
        """
        Args:
            img_size: training image size (int or (H, W)); sizes the fixed position embeddings.
            patch_size: patch side ``p``.
            in_chans: image channels.
            embed_dim, depth, num_heads: encoder width, blocks and heads.
            decoder_embed_dim, decoder_depth, decoder_num_heads: decoder width, blocks and heads
                (paper default 512 / 8 / 16).
            mlp_ratio: MLP hidden size / width, both encoder and decoder.
            norm_eps: LayerNorm epsilon (1e-6 as the official presets).
            norm_pix_loss: regress per-patch normalised pixels (paper's default for its results).
            mask_ratio: share of patches removed (paper: 0.75).
        """
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid_size = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.norm_pix_loss = norm_pix_loss
        self.mask_ratio = mask_ratio
        num_patches = self.grid_size[0] * self.grid_size[1]

        # Encoder: the same modules (and names) as our ViT, with a fixed sin-cos pos_embed.
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_eps=norm_eps) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

        # Decoder.
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + 1, decoder_embed_dim), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_eps=norm_eps)
             for _ in range(decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=norm_eps)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size * patch_size * in_chans)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: sin-cos tables, xavier-uniform linears (patch embedding
        treated as a linear), normal(0.02) tokens, unit LayerNorms."""
        self.pos_embed.data.copy_(sincos_pos_embed_2d(self.pos_embed.shape[-1], self.grid_size))
        self.decoder_pos_embed.data.copy_(
            sincos_pos_embed_2d(self.decoder_pos_embed.shape[-1], self.grid_size)
        )
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set:
        return {"pos_embed", "cls_token", "mask_token", "decoder_pos_embed"}

    def _check_size(self, imgs: torch.Tensor) -> None:
        expected = (self.img_size[0], self.img_size[1])
        if tuple(imgs.shape[-2:]) != expected:
            raise ValueError(f"MAE was built for {expected[0]}x{expected[1]} images, got "
                             f"{imgs.shape[-2]}x{imgs.shape[-1]}; resize the input or set img_size.")

    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float, noise: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, 3, H, W) -> latent (B, 1 + K, C)``, mask ``(B, N)``, ids_restore ``(B, N)``."""
        self._check_size(imgs)
        x, _ = self.patch_embed(imgs)
        x = x + self.pos_embed[:, 1:]
        x, mask, ids_restore = random_masking(x, mask_ratio, noise)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        hw = (1, x.shape[1] - 1)  # visible tokens form no grid; global blocks ignore it
        for blk in self.blocks:
            x = blk(x, hw, 1)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """``latent (B, 1 + K, C)`` -> predicted patches ``(B, N, p*p*3)`` in the original order."""
        x = self.decoder_embed(latent)
        b, n = ids_restore.shape
        mask_tokens = self.mask_token.expand(b, n + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], mask_tokens], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x, self.grid_size, 1)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def loss_target(self, imgs: torch.Tensor) -> torch.Tensor:
        """Per-patch regression target ``(B, N, p*p*3)``: pixels, normalised per patch if
        ``norm_pix_loss`` (mean 0, unbiased variance 1, eps 1e-6 as the official code)."""
        target = patchify(imgs, self.patch_size)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over masked patches of the per-patch mean squared error."""
        per_patch = ((pred - self.loss_target(imgs)) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward(
        self, imgs: torch.Tensor, mask_ratio: Optional[float] = None, noise: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.forward_encoder(imgs, ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask


# Official presets (decoder 512 x 8 blocks x 16 heads), plus a tiny one for CPU runs.
MAE_PRESETS: Dict[str, Dict] = {
    "mae_vit_tiny_patch16": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3,
                                 decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4),
    "mae_vit_base_patch16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "mae_vit_large_patch16": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16),
    "mae_vit_huge_patch14": dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16),
}  # fmt: skip

# The ViT preset (mae_transfer.models.create_vit) whose encoder each MAE preset trains.
ENCODER_PRESET: Dict[str, str] = {
    "mae_vit_tiny_patch16": "vit_tiny_patch16",
    "mae_vit_base_patch16": "vit_base_patch16",
    "mae_vit_large_patch16": "vit_large_patch16",
    "mae_vit_huge_patch14": "vit_huge_patch14",
}


def create_mae(name: str, **overrides) -> MaskedAutoencoderViT:
    """Build an MAE preset (see ``MAE_PRESETS``) with keyword overrides, e.g.
    ``create_mae("mae_vit_tiny_patch16", img_size=128, norm_pix_loss=False)``."""
    if name not in MAE_PRESETS:
        raise ValueError(f"Unknown MAE preset {name!r}; choose one of {sorted(MAE_PRESETS)}.")
    return MaskedAutoencoderViT(**{**MAE_PRESETS[name], **overrides})
