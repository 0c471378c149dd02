"""Two autograd functions that keep less for backward with the same math: the MLP that recomputes
its GELU (one ``(..., hidden)`` activation fewer than ``fc2(gelu(fc1(x)))``) and the decomposed
relative-position terms that keep ``q`` instead of the einsums' copies of it."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from mae_transfer.models.attention import _rel_terms, decomposed_rel_terms
from mae_transfer.models.mlp import Mlp


def _plain(mlp: Mlp, x: torch.Tensor) -> torch.Tensor:
    return mlp.fc2(nn.functional.gelu(mlp.fc1(x)))


def _grads(mlp: Mlp, x: torch.Tensor, forward) -> list[torch.Tensor]:
    mlp.zero_grad()
    x = x.detach().requires_grad_()
    out = forward(x)
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out).to(out.dtype))
    return [out.detach().float(), x.grad] + [p.grad.clone() for p in mlp.parameters()]


@pytest.mark.parametrize("amp", [False, True])
def test_outputs_and_gradients_equal_the_plain_mlp(amp):
    torch.manual_seed(0)
    mlp, x = Mlp(24, 96), torch.randn(2, 50, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        ours = _grads(mlp, x, mlp)
        plain = _grads(mlp, x, lambda t: _plain(mlp, t))
    for a, b in zip(ours, plain):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-6 if not amp else 1e-2, atol=1e-6 if not amp else 1e-2)


def _saved_bytes(forward, x: torch.Tensor, params=()) -> int:
    """Bytes of the storages autograd keeps for backward (each once; parameters excluded)."""
    storages, weights = {}, {p.untyped_storage().data_ptr() for p in params}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward(x.requires_grad_())
    return sum(storages.values())


def test_the_gelu_output_is_not_kept_for_backward():
    mlp, x = Mlp(16, 64), torch.randn(3, 10, 16)
    hidden = 3 * 10 * 64 * 4  # bytes of one (..., hidden) float32 activation
    params = list(mlp.parameters())
    assert _saved_bytes(lambda t: _plain(mlp, t), x, params) - _saved_bytes(mlp, x, params) == hidden


def test_a_replaced_or_hooked_activation_still_runs():
    mlp, x = Mlp(8, 16), torch.randn(4, 8)
    mlp.act = nn.ReLU()
    torch.testing.assert_close(mlp(x), mlp.fc2(torch.relu(mlp.fc1(x))))
    mlp.act = nn.GELU()
    calls = []
    mlp.act.register_forward_hook(lambda *_: calls.append(1))
    mlp(x.requires_grad_()).sum().backward()
    assert calls == [1]


def _rel_inputs():
    torch.manual_seed(0)
    qkv = torch.randn(2, 20, 3, 2, 8, requires_grad=True)  # (B, h*w, 3, heads, d), h, w = 4, 5
    tables = (torch.randn(7, 8, requires_grad=True), torch.randn(9, 8, requires_grad=True))
    return qkv, tables


def test_rel_terms_and_gradients_equal_the_plain_einsums():
    from mae_transfer.models.attention import rel_pos_lookup

    qkv, (rh, rw) = _rel_inputs()
    results = []
    for ours in (True, False):
        for t in (qkv, rh, rw):
            t.grad = None
        q = qkv.permute(2, 0, 3, 1, 4)[0]  # (B, heads, N, d), a strided view as in Attention
        if ours:
            terms = decomposed_rel_terms(q, rh, rw, (4, 5))
        else:
            terms = _rel_terms(q.reshape(2, 2, 4, 5, 8), rel_pos_lookup(rh, 4), rel_pos_lookup(rw, 5))
        (terms[0].sin().sum() + terms[1].cos().sum()).backward()
        results.append([terms[0].detach(), terms[1].detach(), qkv.grad, rh.grad, rw.grad])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_rel_terms_keep_q_not_its_copies():
    from mae_transfer.models.attention import rel_pos_lookup

    qkv = torch.randn(1, 16 * 16, 3, 4, 32)  # (B, N, 3, heads, d)
    tables = [torch.randn(31, 32, requires_grad=True) for _ in range(2)]  # trained, as in the model
    r_h, r_w = (rel_pos_lookup(t, 16) for t in tables)

    def queries(t: torch.Tensor) -> torch.Tensor:  # q as Attention makes it, and t.sin() standing
        q = t.permute(2, 0, 3, 1, 4)[0]  # for the attention, which keeps it for its backward
        return q, q.sin()

    ours = _saved_bytes(lambda t: decomposed_rel_terms(queries(t)[0], *tables, (16, 16)), qkv, tables)
    plain = _saved_bytes(lambda t: _rel_terms(queries(t)[0].reshape(1, 4, 16, 16, 32), r_h, r_w), qkv, tables)
    q_bytes = qkv.numel() // 3 * 4
    assert plain - ours >= 1.5 * q_bytes  # the einsums keep two copies of q, ours q itself
