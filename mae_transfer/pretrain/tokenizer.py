"""Visual tokenizer for BEiT-style pretraining: a k-means codebook of patch features.

BEiT predicts, for each masked patch, the index of its visual token given by DALL-E's dVAE
tokenizer. That tokenizer is not available offline, so BEiT-style pretraining here learns its own
on the same images: every ``p x p`` patch (``p`` = the ViT's patch size, at the pretraining
resolution) becomes a small feature and k-means over a sample of patches gives the codebook.

The feature (``patch_features``): the patch average-pooled to ``pool x pool`` cells per channel
(16x16 -> 4x4x3 = 48 numbers for the default ``pool=4``), then normalised over those numbers
(mean 0, std 1, as MAE's per-patch normalised pixel target, with ``eps`` added to the variance so
flat and near-flat patches map to small vectors instead of amplified noise). A token therefore
says which coarse spatial/colour *pattern* a patch holds (an edge, a corner, a stripe, a flat
area of some hue...), whatever its brightness and contrast (the normalisation is shared by the
three channels, so differences between them, i.e. hue, remain). Tokens are the nearest centroid
in Euclidean distance.

k-means (``kmeans``): k-means++ seeding and Lloyd iterations in torch, deterministic for a seed;
an emptied cluster is re-seeded on the worst-fitted point.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from mae_transfer.errors import ConfigError

Tensor = torch.Tensor


def patch_features(images: Tensor, patch_size: int, pool: int = 4, eps: float = 1e-2) -> Tensor:
    """``(B, 3, H, W)`` normalised images -> ``(B, L, 3 * pool * pool)`` patch features.

    ``L = (H // p) * (W // p)`` in row-major order (the ViT's token order). Each patch is pooled
    to ``pool x pool`` cells per channel (channel-major: all cells of R, then G, then B) and the
    vector is normalised: ``(v - mean(v)) / sqrt(var(v) + eps)``.
    """
    b, c, h, w = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch_size}.")
    if patch_size % pool:
        raise ValueError(f"patch size {patch_size} is not a multiple of the pooling grid {pool}.")
    cells = F.avg_pool2d(images.float(), patch_size // pool)  # (B, C, H/p * pool, W/p * pool)
    gh, gw = h // patch_size, w // patch_size
    x = cells.reshape(b, c, gh, pool, gw, pool).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * pool * pool)
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    return (x - mean) / (var + eps).sqrt()


def squared_distances(x: Tensor, centroids: Tensor, x_sq: Tensor | None = None) -> Tensor:
    """``(N, D), (K, D) -> (N, K)`` squared Euclidean distances (clamped at 0); ``x_sq`` ``(N, 1)``:
    the rows' squared norms when already known."""
    x_sq = x.pow(2).sum(1, keepdim=True) if x_sq is None else x_sq
    return torch.addmm(x_sq + centroids.pow(2).sum(1), x, centroids.T, alpha=-2).clamp_min_(0)


def kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding: ``(N, D) -> (k, D)`` centroids, each drawn with probability
    proportional to the squared distance to the nearest centroid chosen so far."""
    n = x.shape[0]
    x_sq = x.pow(2).sum(1, keepdim=True)
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [x[first]]
    closest = squared_distances(x, x[first:first + 1], x_sq).squeeze(1)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than k: any point
            index = int(torch.randint(n, (1,), generator=generator))
        else:
            index = int(torch.multinomial(closest / total, 1, generator=generator))
        centroids.append(x[index])
        closest = torch.minimum(closest, squared_distances(x, x[index:index + 1], x_sq).squeeze(1))
    return torch.stack(centroids)


def nearest_centroid(x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """``(N, D), (K, D)`` -> index ``(N,)`` long of each row's nearest centroid and its squared
    distance minus ``|x|^2`` ``(N,)`` (argmin of ``|c|^2 - 2 x.c``: one matrix product)."""
    partial, index = torch.addmm(centroids.pow(2).sum(1), x, centroids.T, alpha=-2).min(1)
    return index, partial


def kmeans(x: Tensor, k: int, iters: int = 30, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on ``x`` ``(N, D)`` (float32): returns centroids ``(k, D)`` and the
    assignment ``(N,)`` long to them. Deterministic for a seed (k-means++ seeding); stops early
    when no assignment changes; an emptied cluster is re-seeded on the worst-fitted point."""
    if not 1 <= k <= x.shape[0]:
        raise ConfigError(f"k-means needs 1 <= vocabulary size <= number of patches, got {k} tokens for "
                          f"{x.shape[0]} patches; lower vocab_size or use more images.")
    generator = torch.Generator().manual_seed(seed)
    x = x.float()
    centroids = kmeans_plus_plus(x, k, generator)
    assign = torch.full((x.shape[0],), -1, dtype=torch.long)
    for _ in range(iters):
        new, partial = nearest_centroid(x, centroids)
        if torch.equal(new, assign):
            break
        assign = new
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel():
            error = partial + x.pow(2).sum(1)  # squared distance to the assigned centroid
            centroids[empty] = x[error.topk(empty.numel()).indices]
    return centroids, nearest_centroid(x, centroids)[0]


class PatchKMeansTokenizer:
    """Maps images to visual tokens: ``tokenize((B, 3, H, W)) -> (B, L)`` long in ``[0, K)``.

    Args:
        codebook: ``(K, D)`` centroids, ``D = 3 * pool * pool``.
        patch_size: patch side in pixels (the ViT's).
        pool: cells per patch side of the pooled feature (see :func:`patch_features`).
        eps: added to the per-patch variance before normalising.
    """

    def __init__(self, codebook: Tensor, patch_size: int = 16, pool: int = 4, eps: float = 1e-2):
        if codebook.ndim != 2 or codebook.shape[1] != 3 * pool * pool:
            raise ValueError(f"codebook must be (K, {3 * pool * pool}) for pool={pool}, got {tuple(codebook.shape)}.")
        self.codebook = codebook.float()
        self.patch_size, self.pool, self.eps = patch_size, pool, eps

    @property
    def vocab_size(self) -> int:
        return self.codebook.shape[0]

    def features(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, L, D)``, see :func:`patch_features`."""
        return patch_features(images, self.patch_size, self.pool, self.eps)

    @torch.no_grad()
    def tokenize(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, L)`` index of each patch's nearest centroid."""
        feats = self.features(images)
        b, n, d = feats.shape
        return nearest_centroid(feats.reshape(b * n, d), self.codebook.to(feats.device))[0].reshape(b, n)

    @classmethod
    def fit(cls, images: Tensor, vocab_size: int = 256, patch_size: int = 16, pool: int = 4,
            eps: float = 1e-2, iters: int = 30, max_patches: int = 32768, seed: int = 0) -> "PatchKMeansTokenizer":
        """Learn the codebook from ``images`` ``(N, 3, H, W)``: k-means over (at most
        ``max_patches``, sampled with ``seed``) of their patch features."""
        feats = patch_features(images, patch_size, pool, eps).flatten(0, 1)
        if feats.shape[0] > max_patches:
            keep = torch.randperm(feats.shape[0], generator=torch.Generator().manual_seed(seed))[:max_patches]
            feats = feats[keep]
        centroids, _ = kmeans(feats, vocab_size, iters=iters, seed=seed)
        return cls(centroids, patch_size, pool, eps)

    def state_dict(self) -> dict[str, Any]:
        """What :meth:`from_state_dict` needs (stored in the pretraining checkpoint)."""
        return {"codebook": self.codebook.clone(), "patch_size": self.patch_size, "pool": self.pool,
                "eps": self.eps}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "PatchKMeansTokenizer":
        return cls(state["codebook"], int(state["patch_size"]), int(state["pool"]), float(state["eps"]))

    @torch.no_grad()
    def unigram_entropy(self, images: Tensor) -> float:
        """Entropy (nats) of the token frequencies on ``images``: the cross-entropy a predictor that
        ignores the image would reach, the baseline a pretraining loss should go below."""
        counts = torch.bincount(self.tokenize(images).flatten(), minlength=self.vocab_size).double()
        p = counts[counts > 0] / counts.sum()
        return float(-(p * p.log()).sum())


def chance_loss(vocab_size: int) -> float:
    """Cross-entropy of a uniform prediction over ``vocab_size`` tokens: ``ln K``."""
    return math.log(vocab_size)
