"""Multi-head self-attention with the relative position terms of ViTDet and BEiT.

Parameter names follow timm (``qkv``, ``q_bias``/``v_bias``, ``proj``,
``relative_position_bias_table``) and Detectron2 (``rel_pos_h``/``rel_pos_w``), so checkpoints of
either load without renaming. Relative position terms enter
``F.scaled_dot_product_attention`` as its additive ``attn_mask``; see :mod:`.sdpa` for the CPU
path that keeps the fused kernel when those terms need gradients.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .flex import ATTN_IMPLS, disable_flex, flex_attention_biased, use_flex
from .pos_embed import (
    Size2,
    beit_num_relative_distance,
    beit_relative_position_index,
    rel_pos_lookup,
    resize_beit_rel_pos_table,
    to_2tuple,
)
from .saving import keeps_less_for_backward
from .sdpa import attention

__all__ = [
    "Attention",
    "RelativePositionBias",
    "beit_bias",
    "beit_table_index",
    "window_partition",
    "window_unpartition_heads",
    "decomposed_rel_terms",
]


def window_partition(x: torch.Tensor, window: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Split a grid into non-overlapping windows, zero-padding the bottom/right edges.

    Args:
        x: ``(B, H, W, C)``.
        window: window side ``ws``.

    Returns:
        ``(B * nW, ws*ws, C)`` windows in row-major window order, and the padded size ``(Hp, Wp)``.
    """
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c), (hp, wp)


def window_unpartition_heads(
    out: torch.Tensor, window: int, padded_hw: Tuple[int, int], hw: Tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition` applied to per-head attention outputs:
    ``(B * nW, heads, ws*ws, d) -> (B, H, W, heads*d)``, heads merged and padding cut in one copy.
    """
    hp, wp = padded_hw
    h, w = hw
    _, heads, _, d = out.shape
    x = out.view(-1, hp // window, wp // window, heads, window, window, d)
    x = x.permute(0, 1, 4, 2, 5, 3, 6).reshape(-1, hp, wp, heads * d)
    return x[:, :h, :w] if (hp > h or wp > w) else x


def decomposed_rel_terms(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, hw: Tuple[int, int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Decomposed relative position terms of MViTv2 / ViTDet.

    The attention logit of query ``(i, j)`` and key ``(k, l)`` gets
    ``q_ij . Rh[i - k] + q_ij . Rw[j - l]`` (unscaled ``q``). This returns the two factors; the
    ``(N, N)`` bias is their broadcast sum ``rel_h[..., :, None] + rel_w[..., None, :]``.

    Args:
        q: ``(B, heads, h*w, d)`` queries (no prefix tokens).
        rel_pos_h: ``(Lh, d)`` table; resized (linear) when ``Lh != 2*h - 1``.
        rel_pos_w: ``(Lw, d)`` table; resized when ``Lw != 2*w - 1``.
        hw: query/key grid ``(h, w)``.

    Returns:
        ``rel_h`` of shape ``(B, heads, h, w, h)`` and ``rel_w`` of shape ``(B, heads, h, w, w)``.
    """
    h, w = hw
    b, heads, _, d = q.shape
    r_h = rel_pos_lookup(rel_pos_h, h).to(q.dtype)  # (h, kh, d)
    r_w = rel_pos_lookup(rel_pos_w, w).to(q.dtype)  # (w, kw, d)
    q = q.reshape(b, heads, h, w, d)
    if keeps_less_for_backward(q, r_h, r_w):
        return _RelTerms.apply(q, r_h, r_w)
    return _rel_terms(q, r_h, r_w)


def _rel_terms(q: torch.Tensor, r_h: torch.Tensor, r_w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``q`` ``(B, n, h, w, d)``, ``r_h`` ``(h, kh, d)``, ``r_w`` ``(w, kw, d)`` -> the two terms."""
    return torch.einsum("bnhwc,hkc->bnhwk", q, r_h), torch.einsum("bnhwc,wkc->bnhwk", q, r_w)


class _RelTerms(torch.autograd.Function):
    """:func:`_rel_terms` keeping ``q`` itself for backward. Autograd would keep the contiguous
    copies of ``q`` that each einsum's batched GEMM makes (2x the queries per block; ViTDet-B at
    1024: 326 MB), while ``q`` is kept by the attention anyway."""

    @staticmethod
    def forward(ctx, q, r_h, r_w):
        tables_need_grad = r_h.requires_grad or r_w.requires_grad
        ctx.save_for_backward(q if tables_need_grad else None, *((r_h, r_w) if q.requires_grad else (None, None)))
        ctx.kh, ctx.kw = r_h.shape[1], r_w.shape[1]
        return _rel_terms(q, r_h, r_w)

    @staticmethod
    def backward(ctx, grad_h, grad_w):
        q, r_h, r_w = ctx.saved_tensors
        if grad_h is None:  # a term unused downstream
            grad_h = grad_w.new_zeros(grad_w.shape[:-1] + (ctx.kh,))
        if grad_w is None:
            grad_w = grad_h.new_zeros(grad_h.shape[:-1] + (ctx.kw,))
        grad_q = grad_r_h = grad_r_w = None
        if ctx.needs_input_grad[0]:
            grad_q = torch.einsum("bnhwk,hkc->bnhwc", grad_h, r_h)
            grad_q += torch.einsum("bnhwk,wkc->bnhwc", grad_w, r_w)
        if ctx.needs_input_grad[1]:
            grad_r_h = torch.einsum("bnhwk,bnhwc->hkc", grad_h, q)
        if ctx.needs_input_grad[2]:
            grad_r_w = torch.einsum("bnhwk,bnhwc->wkc", grad_w, q)
        return grad_q, grad_r_h, grad_r_w


def beit_table_index(
    table: torch.Tensor,
    index: torch.Tensor,
    window: Tuple[int, int],
    hw: Tuple[int, int],
    num_prefix_tokens: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The BEiT table for grid ``hw`` (resampled when it differs from ``window``) and its
    ``(P + h*w, P + h*w)`` index; arguments as :func:`beit_bias`."""
    if num_prefix_tokens not in (0, 1):
        raise ValueError("BEiT relative position bias supports 0 or 1 prefix token.")
    hw = tuple(hw)
    if hw != tuple(window):
        table = resize_beit_rel_pos_table(table, window, hw)
        index = beit_relative_position_index(hw, device=table.device)
    if num_prefix_tokens == 0:
        index = index[1:, 1:]
    return table, index


def beit_bias(
    table: torch.Tensor,
    index: torch.Tensor,
    window: Tuple[int, int],
    hw: Tuple[int, int],
    num_prefix_tokens: int,
) -> torch.Tensor:
    """Gather a BEiT bias table into an attention bias for a grid with 0 or 1 cls token in front.

    Args:
        table: ``((2*Wh-1)*(2*Ww-1)+3, heads)`` built for ``window``.
        index: :func:`beit_relative_position_index` of ``window`` (a buffer, reused when
            ``hw == window``).
        window: ``(Wh, Ww)``.
        hw: grid ``(h, w)`` of the tokens; the table is resampled (bicubic) when it differs.
        num_prefix_tokens: 0 or 1.

    Returns:
        ``(1, heads, P + h*w, P + h*w)``.
    """
    table, index = beit_table_index(table, index, window, hw, num_prefix_tokens)
    n = index.shape[0]
    # gathered head-major, so the bias is contiguous: attention kernels copy a strided mask on
    # every call (per head on CPU)
    bias = torch.index_select(table.t().contiguous(), 1, index.reshape(-1))
    return bias.view(1, -1, n, n)


class RelativePositionBias(nn.Module):
    """BEiT relative position bias shared by all blocks (timm ``Beit(use_shared_rel_pos_bias=True)``).

    Holds ``relative_position_bias_table`` ``((2*Wh-1)*(2*Ww-1)+3, heads)`` (zero init) and the
    non-persistent ``relative_position_index`` buffer, as timm's ``RelativePositionBias``.
    """

    def __init__(self, window: Size2, num_heads: int):
        """
        Args:
            window: grid ``(Wh, Ww)`` the table is built for (the patch grid of ``img_size``).
            num_heads: attention heads.
        """
        super().__init__()
        self.window_size = to_2tuple(window)  # timm's name for the table's grid
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros(beit_num_relative_distance(self.window_size), num_heads)
        )
        self.register_buffer(
            "relative_position_index",
            beit_relative_position_index(self.window_size),
            persistent=False,
        )

    def forward(self, hw: Tuple[int, int], num_prefix_tokens: int) -> torch.Tensor:
        """``(1, heads, P + h*w, P + h*w)`` bias for grid ``hw`` (see :func:`beit_bias`)."""
        return beit_bias(
            self.relative_position_bias_table,
            self.relative_position_index,
            self.window_size,
            hw,
            num_prefix_tokens,
        )


class Attention(nn.Module):
    """Multi-head self-attention over a grid of tokens: global (optionally with a cls token in
    front) or in non-overlapping windows (ViTDet)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 12,
        qkv_bias: bool = True,
        qv_bias: bool = False,
        rel_pos: Optional[str] = None,
        input_size: Optional[Size2] = None,
        window_size: int = 0,
        attn_impl: str = "sdpa",
    ):
        """
        Args:
            dim: channels.
            num_heads: attention heads; ``dim`` must divide evenly.
            qkv_bias: bias on the fused ``qkv`` projection (timm ViT, Detectron2 ViT).
            qv_bias: BEiT-style separate ``q_bias``/``v_bias`` (key bias fixed at zero);
                takes precedence over ``qkv_bias``.
            rel_pos: ``None``, ``"decomposed"`` (ViTDet ``rel_pos_h``/``rel_pos_w``, zero init) or
                ``"beit"`` (per-block ``relative_position_bias_table``, zero init). A shared BEiT
                bias is owned by the model and passed to :meth:`forward`.
            input_size: patch grid ``(h, w)`` that sizes the relative tables of global attention
                (window attention sizes them from the window).
            window_size: window side; 0 = global attention. Grids that are not a multiple of the
                window are padded at the bottom/right with zero tokens, as Detectron2's ViTDet
                (zeros after ``norm1``, so padded keys/values equal the ``qkv`` bias).
            attn_impl: kernel for attention with relative position terms: ``"sdpa"``
                (``F.scaled_dot_product_attention`` with a dense bias; on CPU :mod:`.sdpa`'s
                fused path), ``"flex"`` (:mod:`.flex`: the terms inside a FlexAttention kernel,
                compiled on CUDA; where flex cannot run, SDPA) or ``"auto"`` (flex on CUDA when
                available, else SDPA). Default ``"sdpa"``: flex is opt-in until it is measured and
                checked on a GPU. Attention without relative terms always uses SDPA.
        """
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}.")
        if rel_pos not in (None, "decomposed", "beit"):
            raise ValueError(f"rel_pos must be None, 'decomposed' or 'beit', got {rel_pos!r}.")
        if window_size > 0:
            input_size = (window_size, window_size)
        if rel_pos is not None and input_size is None:
            raise ValueError("input_size is required to size relative position tables.")
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}.")
        self.attn_impl = attn_impl
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.rel_pos = rel_pos
        self.window = window_size
        # grid the relative tables are built for; ``window_size`` is timm's name for it
        self.input_size = to_2tuple(input_size) if input_size is not None else None
        self.window_size = self.input_size

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias and not qv_bias)
        if qv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.k_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)

        if rel_pos == "decomposed":
            h, w = self.input_size
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * h - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * w - 1, head_dim))
        elif rel_pos == "beit":
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(beit_num_relative_distance(self.input_size), num_heads)
            )
            self.register_buffer(
                "relative_position_index",
                beit_relative_position_index(self.input_size),
                persistent=False,
            )

    def _qkv_bias(self) -> Optional[torch.Tensor]:
        if self.q_bias is None:
            return self.qkv.bias
        return torch.cat((self.q_bias, self.k_bias, self.v_bias))

    def _attend(
        self,
        qkv: torch.Tensor,
        hw: Tuple[int, int],
        num_prefix_tokens: int,
        shared_bias: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """``qkv`` ``(B, P + h*w, 3C)`` -> attention output ``(B, heads, P + h*w, d)``."""
        b, n, c3 = qkv.shape
        q, k, v = qkv.view(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if self.rel_pos == "decomposed" and num_prefix_tokens:
            raise ValueError("decomposed relative position does not support a cls token.")
        if (self.rel_pos is not None or shared_bias is not None) and use_flex(
            self.attn_impl, q, torch.is_grad_enabled() and self._needs_grad(q)
        ):
            try:
                return self._attend_flex(q, k, v, hw, num_prefix_tokens, shared_bias)
            except Exception as e:  # e.g. no compiler toolchain: keep training on SDPA
                disable_flex(f"{type(e).__name__}: {e}")
        bias = shared_bias
        rel_h = rel_w = None
        if self.rel_pos == "decomposed":
            rel_h, rel_w = decomposed_rel_terms(q, self.rel_pos_h, self.rel_pos_w, hw)
        elif self.rel_pos == "beit":
            own = beit_bias(
                self.relative_position_bias_table,
                self.relative_position_index,
                self.input_size,
                hw,
                num_prefix_tokens,
            ).to(q.dtype)
            bias = own if bias is None else bias + own
        return attention(q, k, v, bias=bias, rel_h=rel_h, rel_w=rel_w, scale=self.scale)

    def _needs_grad(self, q: torch.Tensor) -> bool:
        return q.requires_grad or any(p.requires_grad for p in self.parameters(recurse=False))

    def _attend_flex(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        hw: Tuple[int, int],
        num_prefix_tokens: int,
        shared_bias: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """:meth:`_attend` through :func:`~.flex.flex_attention_biased` (same math)."""
        rel_h = rel_w = table = index = None
        if self.rel_pos == "decomposed":
            rel_h, rel_w = decomposed_rel_terms(q, self.rel_pos_h, self.rel_pos_w, hw)
        elif self.rel_pos == "beit":
            table, index = beit_table_index(
                self.relative_position_bias_table,
                self.relative_position_index,
                self.input_size,
                hw,
                num_prefix_tokens,
            )
        return flex_attention_biased(
            q, k, v, scale=self.scale, rel_h=rel_h, rel_w=rel_w, table=table, index=index,
            bias=shared_bias,
        )  # fmt: skip

    def forward(
        self,
        x: torch.Tensor,
        hw: Tuple[int, int],
        num_prefix_tokens: int = 0,
        shared_bias: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            x: ``(B, P + h*w, C)`` tokens, ``P = num_prefix_tokens`` cls tokens first.
            hw: the grid ``(h, w)``.
            num_prefix_tokens: ``P`` (global attention only).
            shared_bias: optional ``(1, heads, P + h*w, P + h*w)`` bias from a shared BEiT table
                (global attention only).

        Returns:
            ``(B, P + h*w, C)``.
        """
        b, n, c = x.shape
        ws = self.window
        if ws <= 0:
            out = self._attend(F.linear(x, self.qkv.weight, self._qkv_bias()), hw, num_prefix_tokens,
                               shared_bias)  # fmt: skip
            return self.proj(out.transpose(1, 2).reshape(b, n, c))
        if num_prefix_tokens or shared_bias is not None:
            raise ValueError("window attention supports neither cls tokens nor a shared bias.")
        # Project before padding (fewer tokens); a zero token projects to the bias, added after.
        qkv = F.linear(x, self.qkv.weight).view(b, hw[0], hw[1], 3 * c)
        windows, padded_hw = window_partition(qkv, ws)
        qkv_bias = self._qkv_bias()
        if qkv_bias is not None:
            windows = windows.add_(qkv_bias)
        out = self._attend(windows, (ws, ws), 0, None)  # (B * nW, heads, ws*ws, d)
        out = window_unpartition_heads(out, ws, padded_hw, hw)  # (B, h, w, C)
        return self.proj(out.reshape(b, n, c))
