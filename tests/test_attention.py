"""Attention internals against brute-force restatements: window attention (padded grids),
decomposed relative position per pair, the CPU biased-SDPA gradients, BEiT indices, gradient
checkpointing."""

from __future__ import annotations

import pytest
import torch

from mae_transfer.models import create_vit, sdpa
from mae_transfer.models.attention import Attention, beit_bias, decomposed_rel_terms
from mae_transfer.models.pos_embed import beit_relative_position_index


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _perturb_(module, std=0.1):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * std)
    return module


def _pair_bias(q, rel_pos_h, rel_pos_w, hw):
    """Direct per-pair rule: bias[(i,j),(k,l)] = q_ij . Rh[i-k+h-1] + q_ij . Rw[j-l+w-1]."""
    h, w = hw
    n = h * w
    bias = q.new_zeros(q.shape[:-1] + (n,))
    for qi in range(n):
        i, j = divmod(qi, w)
        for ki in range(n):
            k, l = divmod(ki, w)
            r = rel_pos_h[i - k + h - 1] + rel_pos_w[j - l + w - 1]
            bias[..., qi, ki] = (q[..., qi, :] * r).sum(-1)
    return bias


def test_decomposed_rel_pos_matches_per_pair_rule():
    h, w, d = 3, 4, 5
    q = torch.randn(2, 3, h * w, d, dtype=torch.float64)
    rel_h_table = torch.randn(2 * h - 1, d, dtype=torch.float64)
    rel_w_table = torch.randn(2 * w - 1, d, dtype=torch.float64)
    rel_h, rel_w = decomposed_rel_terms(q, rel_h_table, rel_w_table, (h, w))
    got = sdpa.expand_decomposed(rel_h, rel_w)
    torch.testing.assert_close(got, _pair_bias(q, rel_h_table, rel_w_table, (h, w)))


def _brute_force_window_attention(attn: Attention, x, hw, ws):
    """Zero-pad the grid, run plain softmax attention in every window separately, crop."""
    h, w = hw
    b, _, c = x.shape
    heads, d = attn.num_heads, c // attn.num_heads
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    grid = x.new_zeros(b, hp, wp, c)
    grid[:, :h, :w] = x.view(b, h, w, c)
    out = torch.zeros_like(grid)
    for r0 in range(0, hp, ws):
        for c0 in range(0, wp, ws):
            tokens = grid[:, r0 : r0 + ws, c0 : c0 + ws].reshape(b, ws * ws, c)
            qkv = tokens @ attn.qkv.weight.T + attn.qkv.bias
            q, k, v = qkv.view(b, ws * ws, 3, heads, d).permute(2, 0, 3, 1, 4)
            logits = q @ k.transpose(-1, -2) * d**-0.5
            logits = logits + _pair_bias(q, attn.rel_pos_h, attn.rel_pos_w, (ws, ws))
            y = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, ws * ws, c)
            out[:, r0 : r0 + ws, c0 : c0 + ws] = attn.proj(y).view(b, ws, ws, c)
    return out[:, :h, :w].reshape(b, h * w, c)


@pytest.mark.parametrize("hw", [(8, 8), (7, 10), (5, 3)])
def test_window_attention_matches_brute_force(hw):
    """Exact multiple, padding in both directions, grid smaller than one window."""
    ws = 4
    attn = _perturb_(Attention(16, num_heads=2, rel_pos="decomposed", window_size=ws)).double()
    x = torch.randn(2, hw[0] * hw[1], 16, dtype=torch.float64)
    with torch.no_grad():
        got = attn(x, hw)
        expected = _brute_force_window_attention(attn, x, hw, ws)
    torch.testing.assert_close(got, expected)


def _math_attention(q, k, v, bias, rel_h, rel_w, scale):
    logits = q @ k.transpose(-1, -2) * scale
    if rel_h is not None:
        logits = logits + sdpa.expand_decomposed(rel_h, rel_w)
    if bias is not None:
        logits = logits + bias
    return logits.softmax(-1) @ v


@pytest.mark.parametrize("block", [1 << 24, 300, 50])  # one block / split heads / split rows
@pytest.mark.parametrize(
    "rel, bias_shape", [(True, None), (False, (1, 3)), (True, (2, 1)), (True, (2, 3))]
)
def test_cpu_biased_sdpa_matches_math(monkeypatch, block, rel, bias_shape):
    """Outputs and gradients (q, k, v, decomposed terms, broadcast bias) of the fused-forward,
    blockwise-backward CPU path equal plain softmax attention."""
    monkeypatch.setattr(sdpa, "_BLOCK_ELEMENTS", block)
    b, heads, h, w, d = 2, 3, 3, 4, 8
    n = h * w

    def leaf(*shape):
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    q, k, v = leaf(b, heads, n, d), leaf(b, heads, n, d), leaf(b, heads, n, d)
    rel_h = leaf(b, heads, h, w, h) if rel else None
    rel_w = leaf(b, heads, h, w, w) if rel else None
    bias = leaf(*bias_shape, n, n) if bias_shape else None
    inputs = [t for t in (q, k, v, rel_h, rel_w, bias) if t is not None]
    grad = torch.randn(b, heads, n, d, dtype=torch.float64)

    got = sdpa.attention(q, k, v, bias=bias, rel_h=rel_h, rel_w=rel_w, scale=0.3)
    expected = _math_attention(q, k, v, bias, rel_h, rel_w, 0.3)
    torch.testing.assert_close(got, expected)
    for g, e in zip(
        torch.autograd.grad(got, inputs, grad), torch.autograd.grad(expected, inputs, grad)
    ):
        torch.testing.assert_close(g, e)


def test_cpu_biased_sdpa_allocates_its_block_buffers_once_per_call(monkeypatch):
    """The bias / probability / gradient blocks reuse one buffer each per call (a fresh block per
    block cost more than the sums written into it): one in forward, two in backward."""
    monkeypatch.setattr(sdpa, "_BLOCK_ELEMENTS", 50)  # 12 queries, 4 per row: 3 row blocks per head
    allocations = []
    make = sdpa._scratch
    monkeypatch.setattr(sdpa, "_scratch", lambda *a: allocations.append(make(*a)) or allocations[-1])
    q, k, v = (torch.randn(1, 2, 12, 8, requires_grad=True) for _ in range(3))
    rel_h, rel_w = torch.randn(1, 2, 3, 4, 3, requires_grad=True), torch.randn(1, 2, 3, 4, 4, requires_grad=True)
    assert len(list(sdpa._blocks(1, 2, 12, 4))) == 6
    sdpa.attention(q, k, v, rel_h=rel_h, rel_w=rel_w).sum().backward()
    assert len(allocations) == 3 and all(a.numel() == 4 * 12 for a in allocations)  # rows x keys


@pytest.mark.parametrize("window", [(14, 14), (7, 10)])
def test_beit_index_matches_timm(window):
    from timm.models.beit import gen_relative_position_index

    assert torch.equal(beit_relative_position_index(window), gen_relative_position_index(window))


@pytest.mark.parametrize("prefix", [0, 1])
def test_beit_bias_is_timms_gather_and_contiguous(prefix):
    # timm Beit: table[index.view(-1)].view(N, N, heads).permute(2, 0, 1); ours gathers head-major
    # so that attention kernels get a contiguous mask (no strided copy per head)
    window, heads = (6, 5), 3
    index = beit_relative_position_index(window)
    table = torch.randn(int(index.max()) + 1, heads)
    bias = beit_bias(table, index, window, window, prefix)
    full = table[index.view(-1)].view(index.shape[0], index.shape[0], heads).permute(2, 0, 1)
    expected = full[:, 1:, 1:] if prefix == 0 else full
    assert bias.is_contiguous() and torch.equal(bias, expected.unsqueeze(0))


@pytest.mark.parametrize(
    "config",
    [
        dict(window_size=4, global_blocks=(1, 3), rel_pos="decomposed", img_size=96),
        dict(rel_pos="beit_shared", qv_bias=True, layer_scale=0.1, img_size=64),
    ],
    ids=["vitdet", "beit_shared"],
)
@pytest.mark.parametrize("checkpointing", [True, 2])
def test_grad_checkpointing_same_gradients(config, checkpointing):
    """Recomputing blocks in backward (all, or the first 2) leaves every gradient unchanged,
    drop path included (its random masks are replayed)."""
    kwargs = dict(embed_dim=32, depth=4, num_heads=2, drop_path=0.2, **config)
    plain = _perturb_(create_vit("vit_tiny_patch16", **kwargs)).train()
    ckpt = create_vit("vit_tiny_patch16", grad_checkpointing=checkpointing, **kwargs).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 96, 80)

    grads = []
    for model in (plain, ckpt):
        torch.manual_seed(1)
        loss = model.forward_features(x).square().mean()
        names = [name for name, _ in model.named_parameters()]
        params = [p for _, p in model.named_parameters()]
        grads.append(dict(zip(names, torch.autograd.grad(loss, params, allow_unused=True))))
    for name, g in grads[0].items():
        other = grads[1][name]
        if g is None:
            assert other is None, name
            continue
        assert (g - other).abs().max().item() < 1e-5, name


@pytest.mark.parametrize(
    "config",
    [
        dict(window_size=4, global_blocks=(1,), rel_pos="decomposed", img_size=96),
        dict(rel_pos="beit_shared", qv_bias=True, layer_scale=0.1),
        dict(rel_pos="beit", layer_scale=0.1),
    ],
    ids=["vitdet", "beit_shared", "beit"],
)
def test_cpu_bf16_autocast_follows_fp32(config):
    """Under CPU bf16 autocast (half-precision q/k/v, float32 position tables) forward and
    backward run, stay near float32, and every parameter gets a float32 gradient."""
    model = _perturb_(create_vit("vit_tiny_patch16", depth=2, embed_dim=64, num_heads=2, **config))
    x = torch.randn(2, 3, 96, 112)
    expected = model.forward_features(x).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model.forward_features(x)
    got.float().square().mean().backward()
    assert (got.float() - expected).abs().max().item() < 0.1
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32, name
