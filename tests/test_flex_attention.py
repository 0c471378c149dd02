"""Flex attention with relative position terms (``attn_impl="flex"``) against plain softmax math
and against the SDPA path, forward and gradients (inputs and tables), on CPU.

torch refuses flex backward on CPU at its API although its eager (unfused) implementation is
device-independent; the ``cpu_flex_backward`` fixture lifts that guard for these tests only.
"""

from __future__ import annotations

import pytest
import torch

from mae_transfer.models import create_vit, flex
from mae_transfer.models.attention import Attention

fa = pytest.importorskip("torch.nn.attention.flex_attention")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def cpu_flex_backward(monkeypatch):
    monkeypatch.setattr(fa, "_validate_device", lambda *args: None)
    monkeypatch.setattr(flex, "CPU_BACKWARD", True)


def _perturb_(module, std=0.1):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * std)
    return module


def _math(q, k, v, bias, scale):
    return torch.softmax(q @ k.transpose(-1, -2) * scale + bias, dim=-1) @ v


def test_flex_terms_match_softmax_math(cpu_flex_backward):
    """Decomposed terms, a BEiT table + index and a dense bias, each against the dense rule."""
    b, heads, h, w, d = 2, 3, 3, 4, 8
    n = h * w
    q, k, v = (torch.randn(b, heads, n, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    rel_h = torch.randn(b, heads, h, w, h, dtype=torch.float64, requires_grad=True)
    rel_w = torch.randn(b, heads, h, w, w, dtype=torch.float64, requires_grad=True)
    table = torch.randn(7, heads, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 7, (n, n))
    dense = torch.randn(1, heads, n, n, dtype=torch.float64, requires_grad=True)
    scale = 0.3
    got = flex.flex_attention_biased(q, k, v, scale=scale, rel_h=rel_h, rel_w=rel_w, table=table,
                                     index=index, bias=dense)  # fmt: skip
    decomposed = (rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)).reshape(b, heads, n, n)
    beit = table[index].permute(2, 0, 1).unsqueeze(0)
    want = _math(q, k, v, decomposed + beit + dense, scale)
    torch.testing.assert_close(got, want)
    grad = torch.randn_like(got)
    inputs = (q, k, v, rel_h, rel_w, table, dense)
    for g_got, g_want in zip(torch.autograd.grad(got, inputs, grad),
                             torch.autograd.grad(want, inputs, grad)):  # fmt: skip
        torch.testing.assert_close(g_got, g_want)


def _compare(flex_module, sdpa_module, x, hw, prefix=0):
    """Forward and every gradient (input, weights, relative tables) of the two modules."""
    outs, grads = [], []
    for module in (flex_module, sdpa_module):
        xi = x.clone().requires_grad_(True)
        out = module(xi, hw, prefix) if isinstance(module, Attention) else module(xi)
        out = out if torch.is_tensor(out) else out[-1]
        out.square().sum().backward()
        outs.append(out)
        grads.append([xi.grad] + [p.grad for p in module.parameters()])
    torch.testing.assert_close(outs[0], outs[1])
    names = ["input"] + [name for name, _ in flex_module.named_parameters()]
    for name, g_flex, g_sdpa in zip(names, *grads):
        torch.testing.assert_close(g_flex, g_sdpa, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize(
    "kwargs, hw, prefix",
    [
        (dict(rel_pos="decomposed", window_size=4), (5, 6), 0),  # window block, padded grid
        (dict(rel_pos="decomposed", input_size=(4, 4)), (5, 3), 0),  # global, tables resized
        (dict(rel_pos="beit", input_size=(3, 3), qv_bias=True), (3, 3), 1),  # BEiT + cls token
        (dict(rel_pos="beit", input_size=(3, 3)), (4, 5), 0),  # BEiT table resampled
    ],
)
def test_attention_flex_matches_sdpa(cpu_flex_backward, kwargs, hw, prefix):
    sdpa_attn = _perturb_(Attention(16, num_heads=2, attn_impl="sdpa", **kwargs).double())
    flex_attn = Attention(16, num_heads=2, attn_impl="flex", **kwargs).double()
    flex_attn.load_state_dict(sdpa_attn.state_dict())
    x = torch.randn(2, prefix + hw[0] * hw[1], 16, dtype=torch.float64)
    _compare(flex_attn, sdpa_attn, x, hw, prefix)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(window_size=3, global_blocks=(1,), rel_pos="decomposed"),  # ViTDet layout
        dict(rel_pos="beit_shared", qv_bias=True, use_abs_pos=False),  # shared BEiT bias
    ],
)
def test_vit_flex_matches_sdpa(cpu_flex_backward, kwargs):
    common = dict(img_size=64, embed_dim=32, depth=2, num_heads=2, **kwargs)
    sdpa_vit = _perturb_(create_vit("vit_tiny_patch16", attn_impl="sdpa", **common).double())
    flex_vit = create_vit("vit_tiny_patch16", attn_impl="flex", **common).double()
    flex_vit.load_state_dict(sdpa_vit.state_dict())
    _compare(flex_vit, sdpa_vit, torch.randn(2, 3, 80, 64, dtype=torch.float64), None)


def test_flex_used_only_where_it_runs(monkeypatch):
    q = torch.zeros(1, 1, 4, 8)
    assert not flex.use_flex("auto", q, needs_grad=False)  # auto: CUDA only
    assert not flex.use_flex("sdpa", q, needs_grad=False)
    assert flex.use_flex("flex", q, needs_grad=False)  # CPU inference: eager flex
    assert not flex.use_flex("flex", q, needs_grad=True)  # torch has no CPU flex backward
    monkeypatch.setitem(flex._STATE, "module", False)  # flex_attention failed to import
    assert not flex.use_flex("flex", q, needs_grad=False)


def test_flex_failure_falls_back_to_sdpa(monkeypatch):
    """A flex call that raises (e.g. no compiler on CUDA) disables flex and returns SDPA's
    result."""
    from mae_transfer.models import attention

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setitem(flex._STATE, "disabled", None)
    monkeypatch.setattr(attention, "use_flex", lambda *args: flex._STATE["disabled"] is None)
    monkeypatch.setattr(attention, "flex_attention_biased", broken)
    attn = _perturb_(Attention(16, num_heads=2, rel_pos="decomposed", window_size=3))
    reference = Attention(16, num_heads=2, rel_pos="decomposed", window_size=3, attn_impl="sdpa")
    reference.load_state_dict(attn.state_dict())
    x = torch.randn(1, 9, 16)
    torch.testing.assert_close(attn(x, (3, 3)), reference(x, (3, 3)))
    assert flex._STATE["disabled"] == "RuntimeError: no compiler"
    with pytest.raises(ValueError, match="attn_impl"):
        Attention(16, num_heads=2, attn_impl="fast")
