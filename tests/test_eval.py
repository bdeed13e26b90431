"""Perplexity, KL and top-1 agreement."""
import math

import torch
import torch.nn.functional as F

from labkit.eval import calibration_text, eval_text, evaluate, windows
from labkit.models import Llama, LlamaConfig


def tiny(seed: int) -> Llama:
    torch.manual_seed(seed)
    return Llama(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=8)).eval()


def test_shipped_texts_are_long_and_distinct(embedded):
    _, tok = embedded
    assert len(tok.encode(eval_text())) >= 5000
    assert len(tok.encode(calibration_text())) >= 2000
    lines = lambda text: {line for line in text.splitlines() if line.strip()}
    assert not lines(eval_text()) & lines(calibration_text())


def test_windows_cover_every_token_once():
    ids = list(range(23))
    ws = windows(ids, 8)
    assert [len(w) for w in ws] == [8, 8, 7]
    assert sum(len(w) - 1 for w in ws) == 20  # the first token of each window is context only


def test_perplexity_matches_cross_entropy():
    model = tiny(0)
    ids = torch.randint(0, 50, (40,)).tolist()
    result = evaluate(model, ids, window=40)
    with torch.no_grad():
        nll = F.cross_entropy(model(torch.tensor([ids]))[0, :-1], torch.tensor(ids[1:]))
    assert math.isclose(result.ppl, math.exp(nll.item()), rel_tol=1e-5)
    assert result.tokens == 39


def test_kl_is_zero_against_itself_and_positive_otherwise():
    ids = torch.randint(0, 50, (60,)).tolist()
    same = evaluate(tiny(0), ids, reference=tiny(0), window=30)
    assert same.kl == 0.0 and same.top1 == 1.0
    other = evaluate(tiny(0), ids, reference=tiny(1), window=30)
    assert other.kl > 0.01 and other.top1 < 1.0


def test_embedded_perplexity_is_sane(embedded):
    model, tok = embedded
    result = evaluate(model, tok.encode(eval_text()), max_tokens=512)
    assert 5 < result.ppl < 60
