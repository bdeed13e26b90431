"""The fused decoder layer (labkit.engine.fuse.FusedDecoderLayer): at one row it runs the layer as
four fused GEMVs, W4A16 for int4 weights and fp16 for fp16 ones (on a GPU, or in the CUDA
simulator here), at several rows exactly as the model does; `fuse_decode_layers` swaps it in
only where the layers' formats allow."""
import pytest
import torch

pytest.importorskip("labkit.kernels.w4a16_gemv")

from labkit.engine.fuse import FusedDecoderLayer, fuse_decode_layers, fuse_projections  # noqa: E402
from labkit.kernels import launch, measure  # noqa: E402
from labkit.models import Llama, LlamaConfig  # noqa: E402
from labkit.quant.qlinear import quantize_linears  # noqa: E402

CFG = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=64)


def model_of(weights: str = "int4", backend: str = "numba", dtype: torch.dtype = torch.float16) -> Llama:
    torch.manual_seed(0)
    model = Llama(CFG).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:   # norm weights other than 1, so that a missing weight shows
                p.copy_(torch.rand_like(p) + 0.5)
    if weights == "int4":
        quantize_linears(model, 4, 32, backend=backend)
    return fuse_projections(model).to(dtype).to(launch.device())


@pytest.mark.parametrize("weights", ["int4", "fp16"])
def test_one_row_through_the_fused_gemvs_matches_the_layer(weights):
    """Against the layer's own forward (torch: fp16 matmuls over the dequantized weights). Both
    round every intermediate to fp16 by the same formula; they differ by summation order and by
    roundings that land on the other side of an fp16 step, which the next GEMVs carry on: a few
    u16 relative per stage (the kernel checks bound each), over a layer's 4 chained stages."""
    model = model_of(weights)
    layer = model.model.layers[0]
    fused = FusedDecoderLayer(layer)
    x = torch.randn(1, 1, CFG.hidden_size).half().to(launch.device())
    cos, sin = model.rope(torch.tensor([[5]], device=x.device), x.dtype)
    with torch.no_grad():
        want = layer(x, cos, sin, None)
        got = fused(x, cos, sin, None)
    assert got.shape == want.shape and got.dtype == torch.float16
    assert measure.rel_error(got, want) <= 4 * 8 * measure.U16


@pytest.mark.parametrize("weights", ["int4", "fp16"])
def test_several_rows_run_as_the_model_does(weights):
    model = model_of(weights)
    layer = model.model.layers[1]
    x = torch.randn(1, 3, CFG.hidden_size).half().to(launch.device())
    cos, sin = model.rope(torch.arange(3, device=x.device)[None], x.dtype)
    with torch.no_grad():
        assert torch.equal(FusedDecoderLayer(layer)(x, cos, sin, None), layer(x, cos, sin, None))


def test_fuse_only_what_the_kernels_take():
    for weights, name in (("int4", "qweight"), ("fp16", "weight")):
        model = fuse_decode_layers(model_of(weights))
        assert all(type(layer) is FusedDecoderLayer for layer in model.model.layers)
        names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
        assert f"model.layers.0.self_attn.qkv_proj.{name}" in names   # same names, same weights
        assert fuse_decode_layers(model) is model   # again: nothing changes
    mixed = model_of("fp16")
    quantize_linears(mixed.model.layers[0].mlp, 4, 32, backend="numba")   # layer 0: int4 MLP, fp16 attention
    assert [type(layer) is FusedDecoderLayer for layer in fuse_decode_layers(mixed.to(launch.device())).model.layers] \
        == [False, True]
    for other in (model_of(backend="torch"), model_of(dtype=torch.bfloat16), model_of("fp16", dtype=torch.float32)):
        assert not any(type(layer) is FusedDecoderLayer for layer in fuse_decode_layers(other).model.layers)
