"""On a GPU: the fused decoder layers (labkit.engine.fuse: norms, SiLU * up and residual adds inside
the int4 or fp16 GEMVs at one row per step) against the same model without them.

- Decoding step by step (teacher-forced on the unfused model's greedy tokens), the fused model's
  logits stay within a few fp16 steps of the unfused ones, and its greedy token is the same
  wherever the unfused top-2 margin exceeds twice their difference. (The fused GEMV adds up a
  row's squares in its own order and skips two fp16 roundings of the normalized row, so on a
  random model an exact near tie can go either way: one did at token 18 of 40 on an H200.)
- An engine built with fused layers (graph replays of fused steps, and steps of several rows,
  which run as the model does) gives the unfused engine's greedy tokens on a model whose next
  token has a wide margin: the residual stream carries the token's embedding and the vocabulary
  projection maps it to the next token of a fixed cycle, as long as every layer adds its
  residual and keeps the stream finite."""
import copy

import pytest
import torch

from labkit.engine import LLM
from labkit.engine.fuse import FusedDecoderLayer, fuse_decode_layers, fuse_projections, set_fused_decode
from labkit.kernels import measure
from labkit.models import Llama, LlamaConfig
from labkit.models.llama import KVCache
from labkit.models.sampling import SamplingParams
from labkit.quant.qlinear import quantize_linears

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def config(vocab: int) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=8, head_dim=128, max_position_embeddings=1024)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("weights", ["int4", "fp16"])
def test_fused_steps_give_the_unfused_logits(weights):
    cfg = config(4096)
    torch.manual_seed(0)
    model = Llama(cfg).eval()
    if weights == "int4":
        quantize_linears(model, 4, 128, backend="numba")
    model = fuse_projections(model).half().cuda()
    fused = fuse_decode_layers(copy.deepcopy(model))
    assert all(type(layer) is FusedDecoderLayer for layer in fused.model.layers)
    caches = [KVCache(cfg, 1, 64, torch.float16, "cuda") for _ in range(2)]
    ids = torch.arange(100, 117, device="cuda")[None]
    with torch.no_grad():
        for step in range(24):
            want = model(ids, cache=caches[0], last_only=True)[0, -1]
            got = fused(ids, cache=caches[1], last_only=True)[0, -1]
            diff = (got - want).abs().max().item()
            if step:   # (the prompt's prefill runs as the model does in both)
                assert diff <= 32 * measure.U16 * want.abs().max().item(), f"step {step}: logits differ by {diff}"
            top2 = want.topk(2).values
            if (top2[0] - top2[1]).item() > 2 * diff:
                assert got.argmax() == want.argmax(), f"step {step}"
            ids = want.argmax().view(1, 1)


def cycling_model(cfg: LlamaConfig) -> Llama:
    """Random layers whose outputs are small next to the token's embedding, and a vocabulary
    projection that maps embedding i to token (7 i + 3) mod V: a greedy path with wide margins."""
    torch.manual_seed(0)
    model = Llama(cfg).eval()
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb.normal_()
        nxt = (7 * torch.arange(cfg.vocab_size) + 3) % cfg.vocab_size
        model.lm_head.weight.zero_()
        model.lm_head.weight[nxt] = emb
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(0.05)
            layer.mlp.down_proj.weight.mul_(0.05)
    return model


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("weights", ["int4", None])
def test_fused_engine_gives_the_unfused_tokens(tokenizer, weights):
    cfg = config(tokenizer.vocab_size)
    prompts = [list(range(100 + 37 * i, 100 + 37 * i + n)) for i, n in enumerate((5, 40, 17))]
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    outputs, previous = {}, set_fused_decode(False)
    try:
        for fused in (False, True):
            set_fused_decode(fused)
            model = cycling_model(cfg).half().cuda()
            llm = LLM(model, tokenizer=tokenizer, backend="numba", weights=weights, max_batch_size=8, max_model_len=512,
                      num_blocks=128)
            assert all((type(layer) is FusedDecoderLayer) == fused for layer in llm.model.model.layers)
            outputs[fused] = ([llm.generate([p], params)[0].token_ids for p in prompts],
                              [o.token_ids for o in llm.generate(prompts, params)])
            del llm, model
            torch.cuda.empty_cache()
    finally:
        set_fused_decode(previous)
    assert all(len(t) == 40 for t in outputs[True][0])
    assert len({t for ts in outputs[True][0] for t in ts}) > 40   # the path moves: not one token repeated
    assert outputs[True] == outputs[False]
