"""QuantLinear's `numba` backend on a CUDA device agrees with its torch path (skipped without a GPU)."""
import pytest
import torch

from labkit.models.llama import Llama, LlamaConfig
from labkit.quant.qlinear import QuantLinear, quantize_linears, set_backend

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("bits, group, act", [(4, 128, 16), (4, 64, 16), (8, 128, 16), (8, -1, 8)])
@pytest.mark.parametrize("rows", [1, 5, 64])
def test_numba_matches_torch(bits, group, act, rows):
    torch.manual_seed(0)
    q = QuantLinear.from_linear(torch.nn.Linear(576, 1536, bias=False).cuda(), bits, group, act_bits=act)
    x = torch.randn(rows, 576, device="cuda", dtype=torch.float16)
    q.backend = "torch"
    want = q(x)
    q.backend = "numba"
    assert rel(q(x), want) < 2e-3


def test_padded_model_on_gpu_matches_cpu():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1000, hidden_size=576, intermediate_size=1536, num_hidden_layers=2,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, tie_word_embeddings=True)
    cpu = quantize_linears(Llama(config).eval(), 4, 128)       # 576 inputs: padded to 640
    import copy

    gpu = set_backend(copy.deepcopy(cpu).cuda().half(), "numba")
    ids = torch.randint(0, 1000, (1, 40))
    with torch.inference_mode():
        a, b = gpu(ids.cuda()).float().cpu(), cpu(ids)
    assert rel(a, b) < 1e-2 and (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.95
