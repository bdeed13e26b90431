"""Quantized layers on PyTorch's packed CPU kernels: the same weights as the checkpoint, in
every layout `labkit lite` writes, and whole checkpoints on the engine's CPU path."""
import json
import math

import pytest
import torch
from torch import nn

from labkit.cli import main
from labkit.quant.cpu import PackedLinear, kernel_group
from labkit.quant.qlinear import QuantLinear

BF16_EPS = 2.0 ** -8   # bfloat16 keeps 8 bits of mantissa: rounding moves a value by at most this, relatively


@pytest.mark.parametrize("bits, group, k", [(4, 32, 576), (4, 64, 576), (4, 128, 576), (4, 128, 256),
                                            (4, -1, 192), (8, -1, 576)])
def test_packed_layer_holds_the_checkpoint_weights(bits, group, k):
    torch.manual_seed(0)
    layer = QuantLinear.from_linear(nn.Linear(k, 48, bias=True), bits, group)
    packed = PackedLinear.from_quant_linear(layer)
    ref = layer.dequantize()[:, :k]                 # what the checkpoint means (padded columns dropped)
    codes = layer.codes()
    # the kernel's weights: (q - 8) * scale + zero * scale, with scale, zero * scale (|8 - z| <= 8
    # steps) and the result each rounded to bfloat16 once
    step = codes.scale.repeat_interleave(layer.padded_in // codes.scale.shape[1], 1)[:, :k]
    assert (packed.dequantize() - ref).abs().le(BF16_EPS * (ref.abs() + 16 * step)).all()
    x = torch.randn(5, k)
    y = packed(x)
    assert y.dtype == x.dtype and y.shape == (5, 48)
    exact = x @ ref.t() + layer.bias
    assert (y - exact).norm() / exact.norm() < 4 * BF16_EPS


def test_groups_that_do_not_divide_the_input_run_unpadded():
    assert kernel_group(128, 576) == 64 and kernel_group(32, 576) == 32 and kernel_group(576, 576) == 64
    assert kernel_group(16, 64) is None
    layer = QuantLinear.from_linear(nn.Linear(576, 32), 4, 128)      # stored as 640 inputs
    packed = PackedLinear.from_quant_linear(layer)
    assert (packed.in_features, packed.group_size) == (576, 64) and layer.padded_in == 640


def test_layouts_without_a_kernel_say_why():
    with pytest.raises(ValueError, match="divide by 16"):
        PackedLinear.from_quant_linear(QuantLinear.from_linear(nn.Linear(64, 40), 4, 32))
    with pytest.raises(ValueError, match="per-channel"):
        PackedLinear.from_quant_linear(QuantLinear.from_linear(nn.Linear(64, 32), 8, 32))


@pytest.fixture(scope="module")
def checkpoints(tiny_folder, tmp_path_factory):
    """An AWQ checkpoint at group 128 (inputs zero-padded: hidden 64) and an RTN one at group 32."""
    out = tmp_path_factory.mktemp("ckpts")
    for method, args in (("auto_awq", ["--w-group-size", "128", "--calib-samples", "1", "--calib-seqlen", "128"]),
                         ("rtn", ["--w-bits", "4", "--w-group-size", "32"])):
        assert main(["lite", method, str(tiny_folder), "--work-dir", str(out / method), *args]) == 0
    return out


@pytest.mark.parametrize("method", ["auto_awq", "rtn"])
def test_checkpoint_on_the_cpu_path_gives_its_dequantized_logits(checkpoints, method):
    from labkit.engine import LLM, SamplingParams
    from labkit.loading import load_model

    folder = str(checkpoints / method)
    reference, tokenizer = load_model(folder)            # QuantLinear: dequantized, float32
    llm = LLM(folder, device="cpu", num_blocks=16, max_model_len=64)
    try:
        layers = [m for m in llm.model.model.modules() if isinstance(m, (PackedLinear, QuantLinear))]
        assert layers and all(isinstance(m, PackedLinear) for m in layers)   # every layer on the kernels
        head = llm.model.lm_head
        assert isinstance(head, QuantLinear) and (head.bits, head.act_bits) == (8, 8), \
            "the checkpoint's float head runs W8A8"
        assert llm.model.model.embed_tokens.weight.dtype == torch.bfloat16   # the lookup table stays float
        ids = tokenizer.encode("The quick brown fox jumps over the lazy dog")
        with torch.inference_mode():
            want = reference(torch.tensor([ids]))[0, -1]
            got = llm.model(torch.tensor([ids]))[0, -1].float()
        # bfloat16 activations and scales through two layers and the int8 weights (2^-8 relative
        # at most per weight): a few roundings of 2^-8 each; and the head's input rounded to
        # int8 per row: each of its K values off by at most absmax / 254, so by at most
        # sqrt(K) / 254 of the row's norm (which is at least absmax)
        k = llm.model.config.hidden_size
        assert (got - want).norm() / want.norm() < 8 * BF16_EPS + math.sqrt(k) / 254
        out = llm.generate([ids], SamplingParams(temperature=0, max_tokens=4))[0]
        assert len(out.token_ids) == 4
    finally:
        llm.close()


def test_eval_reports_the_same_quality_on_the_cpu_kernels(checkpoints, capsys, monkeypatch):
    from labkit.eval import eval_text, evaluate
    from labkit.loading import load_model

    calls = []
    forward = PackedLinear.forward
    monkeypatch.setattr(PackedLinear, "forward", lambda self, x: calls.append(1) or forward(self, x))
    folder = str(checkpoints / "auto_awq")
    assert main(["eval", folder, "--max-tokens", "128", "--json"]) == 0
    ev = json.loads(capsys.readouterr()[0])
    assert calls   # the checkpoint ran on the CPU kernels
    model, tokenizer = load_model(folder)                # as eval measured before: dense float32
    source, _ = load_model(ev["reference"])
    before = evaluate(model, tokenizer.encode(eval_text()), source, max_tokens=128)
    # the mean log-likelihood, like the logits, within a few bfloat16 roundings
    assert math.log(ev["ppl"]) == pytest.approx(math.log(before.ppl), rel=8 * BF16_EPS)
    assert ev["top1"] == pytest.approx(before.top1, abs=0.03)


def test_int8_head_is_smoothed_w8a8_and_row_independent(tiny_folder):
    """The head's outlier channels move into its weights (SmoothQuant, folded into the final
    norm: the float function is unchanged), then it runs on int8 x int8 with one scale per row,
    so a row's logits are the same bits alone or in a batch."""
    from labkit.loading import load_model
    from labkit.quant.calib import calibration_ids
    from labkit.quant.cpu import int8_head
    from labkit.quant.qlinear import quantize_per_token

    model, tokenizer = load_model(str(tiny_folder))
    calib = calibration_ids(tokenizer, n_samples=1, seqlen=64)
    x = torch.randn(5, model.config.hidden_size) * (1 + 20 * (torch.arange(model.config.hidden_size) % 17 == 0))
    before_norm, before_w = model.model.norm.weight.detach().clone(), model.lm_head.weight.detach().clone()
    head = int8_head(model, calib)
    s = before_norm / model.model.norm.weight.detach()           # the scales folded into the norm
    assert s.min() > 0 and not torch.allclose(s, torch.ones_like(s))
    assert torch.equal(model.lm_head.weight, before_w), "the tied embedding table is left as it is"
    smoothed = head.dequantize()                                  # int8 per output channel of W * s
    step = (before_w * s).abs().amax(1, keepdim=True) / 127
    # half a step of rounding, plus the step itself stored in float16 (2^-11), times up to 127
    assert ((smoothed - before_w * s).abs() <= step * (0.5 + 127 * 2.0 ** -11)).all()
    # the W8A8 product: exactly the integer sums of the row-quantized input, rescaled
    xs = x / s
    q, sx = quantize_per_token(xs)
    want = (q.double() @ head.qweight.double().t()) * sx.double() * head.scales.double().reshape(1, -1)
    got = head(xs)
    assert torch.allclose(got.double(), want, rtol=1e-6, atol=1e-6)
    alone = torch.cat([head(xs[i:i + 1]) for i in range(5)])
    assert torch.equal(alone, got), "a row's logits must not depend on the other rows"
    # and close to the float head on the original input (int8 rounding of weights and input)
    exact = x @ before_w.t()
    assert (got - exact).norm() / exact.norm() < 2 * math.sqrt(x.shape[1]) / 254
