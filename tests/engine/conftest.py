"""Fixtures for the engine tests: a tiny random Llama in float64 (batching cannot flip an
argmax through rounding) with the embedded model's tokenizer, and helpers."""
import pytest
import torch

from labkit.models import Llama, LlamaConfig, Tokenizer, resolve
from labkit.models.generate import generate
from labkit.models.sampling import SamplingParams


@pytest.fixture(scope="session")
def tokenizer():
    return Tokenizer(resolve("embedded"))


@pytest.fixture(scope="session")
def tiny(tokenizer):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                      tie_word_embeddings=True, eos_token_id=2)
    model = Llama(cfg).double().eval()
    with torch.no_grad():   # sharper logits: greedy paths that wander instead of repeating one token
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return model


def greedy(max_tokens: int = 12, **kw) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens, **kw)


def reference(model, tok, prompts, params):
    """The simple generator's answers (params: one for all, or one per prompt)."""
    per_prompt = params if isinstance(params, list) else [params] * len(prompts)
    return [generate(model, tok, p, sp) for p, sp in zip(prompts, per_prompt)]


def prompts_of(tok, n: int, lengths=(3, 17, 40, 9, 33, 64, 5, 21), seed: int = 0) -> list[list[int]]:
    """n prompts of mixed lengths cut from a real text (token ids)."""
    text = ("The history of the printing press begins in 1440, when Johannes Gutenberg combined a screw press "
            "with movable metal type, oil-based ink and a hand mould. Within decades presses spread across "
            "Europe, books became cheaper, and literacy rose. ") * 6
    ids = tok.encode(text)
    return [ids[(seed * 7 + 11 * i) % 50:][:lengths[i % len(lengths)]] for i in range(n)]


def assert_no_leaks(llm):
    """Every block is free (some may still carry prefix-cache content), nothing is queued."""
    s = llm.stats()
    assert s["blocks_used"] == 0 and s["blocks_free"] == s["blocks_total"], s
    assert s["running"] == 0 and s["waiting"] == 0, s
    bm = llm.engine.block_manager
    assert all(b.ref_count == 0 for b in bm.blocks), [b for b in bm.blocks if b.ref_count]


@pytest.fixture(scope="session")
def h():
    """The helpers above (tests run with --import-mode=importlib, so they cannot import conftest)."""
    import sys

    return sys.modules[__name__]
