"""On a GPU: decode steps replayed from CUDA graphs (inputs copied in by the graph itself) give
the greedy tokens of the same steps run eagerly, with fp16 and W4A16 weights, and with the
W4A16 kernels' launches overlapped in the graphs (programmatic dependent launch). At batch 1
both run the same kernels on the same shapes, so the tokens must be equal, not merely close."""
import pytest
import torch

from labkit.engine import LLM
from labkit.kernels import launch
from labkit.models import Llama, LlamaConfig
from labkit.models.sampling import SamplingParams


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("weights, overlap", [("fp16", False), ("int4", False), ("int4", True)])
def test_graph_replays_give_the_eager_tokens(weights, overlap, tokenizer):
    cfg = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=8, head_dim=128, max_position_embeddings=1024)
    prompts = [list(range(100 + 37 * i, 100 + 37 * i + n)) for i, n in enumerate((5, 40, 17))]
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    outputs, previous = {}, launch.set_overlap(False)
    try:
        for graphs in (False, True):
            launch.set_overlap(overlap and graphs)   # graphs capture the launches as they are made
            torch.manual_seed(0)
            with torch.device("cuda"):
                model = Llama(cfg).half()
            llm = LLM(model, tokenizer=tokenizer, backend="numba", weights=None if weights == "fp16" else weights,
                      max_batch_size=8, max_model_len=512, num_blocks=128, use_cuda_graph=graphs)
            assert bool(llm.engine.runner.graphs) == graphs
            outputs[graphs] = [llm.generate([p], params)[0].token_ids for p in prompts]
            del llm, model
            torch.cuda.empty_cache()
    finally:
        launch.set_overlap(previous)
    assert all(len(t) == 40 for t in outputs[True])
    assert outputs[True] == outputs[False]
