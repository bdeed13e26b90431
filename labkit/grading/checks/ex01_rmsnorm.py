"""Checks for exercise 01a: RMSNorm and RoPE, against `labkit.models.llama`."""
from __future__ import annotations

import random
from types import SimpleNamespace

import torch

from labkit.grading import check
from labkit.models.llama import Llama, LlamaConfig, RMSNorm, apply_rope, rope_frequencies


def _reference_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    norm = RMSNorm(x.shape[-1], eps)
    with torch.no_grad():
        norm.weight.copy_(weight)
    return norm(x).detach()


def _reference_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    D = x.shape[-1]
    config = LlamaConfig(vocab_size=1, hidden_size=D, intermediate_size=1, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, head_dim=D, rope_theta=theta)
    cos, sin = Llama.rope(SimpleNamespace(inv_freq=rope_frequencies(config)), positions, x.dtype)
    return apply_rope(x, cos, sin)


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def _tensor(impl_out, shape, name) -> torch.Tensor:
    assert isinstance(impl_out, torch.Tensor), f"{name} should return a torch.Tensor, got {type(impl_out).__name__}"
    assert tuple(impl_out.shape) == tuple(shape), f"{name}: expected shape {tuple(shape)}, got {tuple(impl_out.shape)}"
    return impl_out


@check(points=3)
def rms_norm_matches_reference(impl):
    for _ in range(3):
        d = random.choice([8, 64, 576])
        x = torch.randn(2, random.randint(1, 7), d) * random.choice([0.5, 3.0])
        w = torch.randn(d)
        want = _reference_norm(x, w, 1e-5)
        got = _tensor(impl.rms_norm(x, w, 1e-5), x.shape, "rms_norm")
        tol = 1e-5 * (1 + float(want.abs().max()))
        if _err(got, want) > tol:
            hint = ""
            rms = x.pow(2).mean(-1, keepdim=True).sqrt()
            if _err(got, x / (rms + 1e-5) * w) < tol:
                hint = " eps goes inside the square root: sqrt(mean(x^2) + eps)."
            elif _err(got, _reference_norm(x, torch.ones(d), 1e-5)) < 1e-4:
                hint = " Multiply by `weight` at the end."
            elif _err(got, torch.nn.functional.layer_norm(x, (d,)) * w) < 1e-4:
                hint = " That is LayerNorm: RMSNorm does not subtract the mean."
            elif _err(got, x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + 1e-5) * w) < 1e-4:
                hint = " Use the mean of the squares, not their sum."
            raise AssertionError(f"rms_norm differs from the reference by {_err(got, want):.3g} on x {tuple(x.shape)}.{hint}")


@check(points=2)
def rms_norm_eps_inside_the_root(impl):
    d = 32
    x = torch.randn(3, d) * 1e-3   # tiny activations: here eps matters
    w = torch.rand(d) + 0.5
    for eps in (1e-6, 1e-2):
        want = _reference_norm(x, w, eps)
        got = _tensor(impl.rms_norm(x, w, eps), x.shape, "rms_norm")
        if _err(got, want) > 1e-4 * float(want.abs().max()):
            hint = ""
            rms = x.pow(2).mean(-1, keepdim=True).sqrt()
            if _err(got, x / (rms + eps) * w) < 1e-4 * float(want.abs().max()):
                hint = " eps goes inside the square root: sqrt(mean(x^2) + eps), not sqrt(mean(x^2)) + eps."
            elif _err(got, x / rms * w) < 1e-4 * float(want.abs().max()):
                hint = " eps was ignored."
            raise AssertionError(f"with small inputs and eps={eps}, rms_norm differs by {_err(got, want):.3g}.{hint}")


@check(points=1)
def rms_norm_keeps_dtype(impl):
    x = (torch.randn(4, 64) * 100).to(torch.bfloat16)
    w = torch.rand(64).to(torch.bfloat16)
    got = impl.rms_norm(x, w, 1e-5)
    assert got.dtype == torch.bfloat16, f"a bfloat16 input should give a bfloat16 output, got {got.dtype}"
    want = _reference_norm(x, w, 1e-5)
    assert _err(got, want) < 0.05, f"bfloat16 rms_norm differs by {_err(got, want):.3g}: compute in float32 inside"


@check(points=2)
def rope_inv_freq_matches_reference(impl):
    for D, theta in ((64, 10000.0), (128, 500000.0), (32, 100000.0)):
        config = LlamaConfig(vocab_size=1, hidden_size=D, intermediate_size=1, num_hidden_layers=1,
                             num_attention_heads=1, num_key_value_heads=1, head_dim=D, rope_theta=theta)
        want = rope_frequencies(config)
        got = impl.rope_inv_freq(D, theta)
        assert isinstance(got, torch.Tensor), "rope_inv_freq should return a tensor"
        assert tuple(got.shape) == (D // 2,), f"rope_inv_freq({D}) should have D/2 = {D // 2} entries, got {tuple(got.shape)}"
        rel = float(((got.double() - want.double()) / want.double()).abs().max())
        if rel > 1e-5:
            hint = ""
            if torch.allclose(got.double(), 1.0 / theta ** (torch.arange(D // 2, dtype=torch.float64) / D), rtol=1e-5):
                hint = " The exponent is 2i / D (i = 0 .. D/2-1), i.e. arange(0, D, 2) / D."
            raise AssertionError(f"rope_inv_freq({D}, {theta}) differs from the reference (relative {rel:.3g}).{hint}")


@check(points=4)
def apply_rope_matches_reference(impl):
    for _ in range(3):
        B, T, H, D = random.randint(1, 2), random.randint(2, 9), random.randint(1, 4), random.choice([16, 64])
        theta = random.choice([10000.0, 100000.0])
        x = torch.randn(B, T, H, D)
        positions = torch.randint(0, 512, (B, T))
        positions[0, 0] = 0
        want = _reference_rope(x, positions, theta)
        got = _tensor(impl.apply_rope(x, positions, theta), x.shape, "apply_rope")
        if _err(got, want) > 1e-3:
            hint = ""
            if _err(got[0, 0], x[0, 0]) > 1e-5:
                hint = " At position 0 the angle is 0, so the vector must come out unchanged."
            else:
                # neighbours (2i, 2i+1) rotated together: the GPT-NeoX vs GPT-J confusion
                xi = x.view(B, T, H, D // 2, 2)
                perm = torch.cat((xi[..., 0], xi[..., 1]), dim=-1)
                inter = _reference_rope(perm, positions, theta)
                inter = torch.stack(inter.chunk(2, dim=-1), dim=-1).reshape(B, T, H, D)
                if _err(got, inter) < 1e-3:
                    hint = " You rotated neighbouring pairs (2i, 2i+1); Llama rotates (i, i + D/2)."
            raise AssertionError(f"apply_rope differs from the reference by {_err(got, want):.3g} "
                                 f"on x {tuple(x.shape)}, theta {theta:g}.{hint}")
    # relative positions: shifting every position by the same amount keeps q . k
    q, k = torch.randn(1, 2, 1, 64), torch.randn(1, 2, 1, 64)
    p = torch.tensor([[3, 10]])
    dots = [(impl.apply_rope(q, p + s, 10000.0)[0, 1] * impl.apply_rope(k, p + s, 10000.0)[0, 0]).sum() for s in (0, 100)]
    assert abs(float(dots[0] - dots[1])) < 1e-3 * (1 + abs(float(dots[0]))), \
        "q.k after RoPE should depend only on the distance between positions"
