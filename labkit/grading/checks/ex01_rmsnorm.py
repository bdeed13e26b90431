"""Checks for exercise 01a: RMSNorm and RoPE, against `labkit.models.llama`."""
from __future__ import annotations

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


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@check(points=3)
def rms_norm_matches_reference(impl):
    for shape, scale, seed in (((2, 5, 8), 0.5, 0), ((1, 1, 64), 3.0, 1), ((2, 3, 576), 1.0, 2)):
        d = shape[-1]
        x, w = _randn(*shape, seed=seed) * scale, _randn(d, seed=seed + 10)
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
    x = _randn(3, d, seed=3) * 1e-3   # tiny activations: here eps matters
    w = torch.rand(d, generator=torch.Generator().manual_seed(4)) + 0.5
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
            elif _err(got, _reference_norm(x, w, 1e-5)) < 1e-4 * float(want.abs().max()):
                hint = " The `eps` argument was ignored (a fixed 1e-5 was used)."
            raise AssertionError(f"with small inputs and eps={eps}, rms_norm differs by {_err(got, want):.3g}.{hint}")


@check(points=2)
def rms_norm_half_precision(impl):
    """bf16 and fp16 inputs give outputs of the same dtype; fp16 activations of a few hundred
    (real models have them) square past fp16's largest number, 65504: compute in float32."""
    for dtype, scale in ((torch.bfloat16, 100.0), (torch.float16, 400.0)):
        x = (_randn(4, 64, seed=5) * scale).to(dtype)
        w = (torch.rand(64, generator=torch.Generator().manual_seed(6)) + 0.5).to(dtype)
        got = impl.rms_norm(x, w, 1e-5)
        assert got.dtype == dtype, f"a {dtype} input should give a {dtype} output, got {got.dtype}"
        want = _reference_norm(x.float(), w.float(), 1e-5)
        if not torch.isfinite(got.float()).all() or _err(got, want) > 0.05:
            raise AssertionError(f"{dtype} rms_norm of activations around {scale:g} differs by {_err(got, want):.3g}: "
                                 "their squares overflow in half precision; compute in float32 (x.float()) "
                                 "and convert back at the end")


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


def _positions(B: int, T: int) -> torch.Tensor:
    """Row 0 starts at 0 (angle 0: unchanged); later rows are later turns of a chat, with gaps."""
    return torch.stack([torch.arange(T) * (1 + b) + 37 * b for b in range(B)])


@check(points=4)
def apply_rope_matches_reference(impl):
    for (B, T, H, D), theta, seed in (((2, 5, 3, 16), 10000.0, 0), ((1, 7, 2, 64), 500000.0, 1),
                                      ((3, 1, 4, 32), 1e6, 2)):   # a single token per row, as in decode
        x = _randn(B, T, H, D, seed=seed)
        positions = _positions(B, T)
        want = _reference_rope(x, positions, theta)
        got = _tensor(impl.apply_rope(x, positions, theta), x.shape, "apply_rope")
        if _err(got, want) > 1e-3:
            hint = ""
            if _err(got[0, 0], x[0, 0]) > 1e-5:
                hint = " At position 0 the angle is 0, so the vector must come out unchanged."
            elif theta != 10000.0 and _err(got, _reference_rope(x, positions, 10000.0)) < 1e-3:
                hint = " The `theta` argument was ignored (Llama-3 uses 500000, not the default 10000)."
            elif _err(got, _reference_rope(x, torch.arange(T).expand(B, T), theta)) < 1e-3:
                hint = " Use `positions`, not 0 .. T-1: a decode step's token sits at the end of its sequence."
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
    # late positions: fp16 holds whole numbers exactly only up to 2048 (4097 becomes 4096)
    x = _randn(1, 5, 2, 32, seed=12)
    late = torch.tensor([[0, 1, 2049, 4097, 60001]])
    want = _reference_rope(x, late, 10000.0)
    got = _tensor(impl.apply_rope(x, late, 10000.0), x.shape, "apply_rope")
    assert _err(got, want) < 1e-3, (f"at positions {late.tolist()[0]} apply_rope differs by {_err(got, want):.3g}: "
                                    "compute the angles in float32 (fp16 rounds positions above 2048)")
    # relative positions: shifting every position by the same amount keeps q . k
    q, k = _randn(1, 2, 1, 64, seed=7), _randn(1, 2, 1, 64, seed=8)
    p = torch.tensor([[3, 10]])
    dots = [(impl.apply_rope(q, p + s, 10000.0)[0, 1] * impl.apply_rope(k, p + s, 10000.0)[0, 0]).sum() for s in (0, 100)]
    assert abs(float(dots[0] - dots[1])) < 1e-3 * (1 + abs(float(dots[0]))), \
        "q.k after RoPE should depend only on the distance between positions"


@check(points=1)
def inputs_are_not_modified(impl):
    x, w = _randn(2, 3, 16, seed=9) * 2, _randn(16, seed=10)
    q, positions = _randn(1, 4, 2, 16, seed=11), _positions(1, 4) + 1
    copies = [t.clone() for t in (x, w, q, positions)]
    impl.rms_norm(x, w, 1e-5)
    impl.apply_rope(q, positions, 10000.0)
    for name, t, before in zip(("rms_norm's x", "rms_norm's weight", "apply_rope's x", "apply_rope's positions"),
                               (x, w, q, positions), copies):
        assert torch.equal(t, before), (f"{name} was changed: the caller still needs it (the residual stream "
                                        "adds x back). Write into new tensors, not in place (no x /= ..., x[...] = ...)")
