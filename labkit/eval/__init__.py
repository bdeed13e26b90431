"""Quality of a model on the project's own text: perplexity, and agreement with a reference.

Perplexity says how well a model predicts the text. Against a reference (usually the
full-precision model a compressed one came from) two sharper numbers, the ones llama.cpp
reports for its quantization types: the mean KL divergence KL(reference || candidate) of the
next-token distributions, and top-1 agreement, how often both pick the same most likely token.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from labkit.models.llama import Llama
from labkit.texts import calibration_text, eval_text  # noqa: F401  (the texts, importable from here too)


@dataclass
class EvalResult:
    tokens: int
    ppl: float
    kl: float | None = None
    top1: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def windows(ids: list[int], window: int, max_tokens: int | None = None) -> list[list[int]]:
    """Non-overlapping windows of the token stream; the first token of each is context only."""
    if max_tokens is not None:
        ids = ids[: max_tokens + 1]
    return [ids[i:i + window] for i in range(0, len(ids) - 1, window) if len(ids[i:i + window]) > 1]


@torch.inference_mode()
def evaluate(model: Llama, ids: list[int], reference: Llama | None = None, window: int = 512,
             max_tokens: int | None = None, progress=None, cache=None) -> EvalResult:
    """Perplexity of `model` on token ids, and KL / top-1 against `reference` when given.

    `cache` is passed to `model` as its attention cache on every window (the reference runs
    without): e.g. `labkit.quant.kv.FakeQuantKV(8)` measures an int8 KV cache.
    """
    nll, kl, agree, count = 0.0, 0.0, 0, 0
    device = model.model.embed_tokens.weight.device
    chunks = windows(ids, window, max_tokens)
    for chunk in (progress(chunks) if progress else chunks):
        x = torch.tensor([chunk], device=device)
        logp = model(x, cache=cache)[0, :-1].log_softmax(-1).double()
        target = x[0, 1:]
        nll -= logp.gather(-1, target[:, None]).sum().item()
        if reference is not None:
            ref = reference(x.to(reference.lm_head.weight.device))[0, :-1].to(device).log_softmax(-1).double()
            kl += (ref.exp() * (ref - logp)).sum().item()
            agree += (ref.argmax(-1) == logp.argmax(-1)).sum().item()
        count += len(chunk) - 1
    result = EvalResult(tokens=count, ppl=float(torch.tensor(nll / count).exp()))
    if reference is not None:
        result.kl, result.top1 = kl / count, agree / count
    return result
