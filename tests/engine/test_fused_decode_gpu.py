"""On a GPU: an int4 engine whose decoder layers run one-row steps as fused GEMVs (norms, SiLU * up
and residual adds inside them, labkit.engine.fuse) gives the greedy tokens of the same engine
without them, one prompt at a time (graph replays of fused steps) and three at once (steps of
several rows, which run as the model does). The fused GEMV adds up each row's squares in its
own order, so its activations may differ from Inductor's and torch's in the last bit: the
tokens are equal unless an argmax is a near tie, which these prompts do not meet."""
import pytest
import torch

from labkit.engine import LLM
from labkit.engine.fuse import FusedDecoderLayer, set_fused_decode
from labkit.models import Llama, LlamaConfig
from labkit.models.sampling import SamplingParams


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fused_engine_gives_the_unfused_tokens(tokenizer):
    cfg = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=8, head_dim=128, max_position_embeddings=1024)
    prompts = [list(range(100 + 37 * i, 100 + 37 * i + n)) for i, n in enumerate((5, 40, 17))]
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    outputs, previous = {}, set_fused_decode(False)
    try:
        for fused in (False, True):
            set_fused_decode(fused)
            torch.manual_seed(0)
            with torch.device("cuda"):
                model = Llama(cfg).half()
            llm = LLM(model, tokenizer=tokenizer, backend="numba", weights="int4", max_batch_size=8, max_model_len=512,
                      num_blocks=128)
            assert all((type(layer) is FusedDecoderLayer) == fused for layer in llm.model.model.layers)
            outputs[fused] = ([llm.generate([p], params)[0].token_ids for p in prompts],
                              [o.token_ids for o in llm.generate(prompts, params)])
            del llm, model
            torch.cuda.empty_cache()
    finally:
        set_fused_decode(previous)
    assert all(len(t) == 40 for t in outputs[True][0])
    for got, want in zip(outputs[True][0] + outputs[True][1], outputs[False][0] + outputs[False][1]):
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
        assert first is None, f"fused tokens differ from token {first} on: {got[first:first + 5]} vs {want[first:first + 5]}"
