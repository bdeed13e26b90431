"""What the student trains on: the teacher's own answers, its continuations of prose, and the calibration text.

Sequence-level distillation (Kim & Rush 2016): the teacher answers a set of prompts, and the
student learns from those sequences, on which the teacher's distributions are the ones it
meets when it generates. The student is measured on prose (the evaluation text), and the
project's prose it may train on, the calibration text, is scarce (a few thousand tokens; the
evaluation text is never trained on). A long run would see it, and the answers to the chat
prompts, dozens of times over. So the teacher also continues openings taken from the
calibration text, sampling at temperature 1 from its own distribution: as much prose-like,
in-distribution data as the budget needs, every sample (its own seed) new.

Both kinds come from labkit's engine (continuous batching, `generate_cached`) and are
cached in the work dir under a key made of the teacher, the prompts and the sampling
settings, so a second run (or `--resume`) does not generate them again. Everything is packed into one token stream cut into windows of `seq_len + 1` tokens
(inputs and their next-token labels). The order of the windows is a function of the seed and
the sample index only, so a resumed run reads exactly what an uninterrupted one would.
"""
from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import torch

from labkit.models.llama import Llama
from labkit.models.tokenizer import Tokenizer

DATA_KINDS = ("teacher", "text", "both")


def prompts() -> list[str]:
    """The prompt set shipped with labkit: questions, instructions and tasks on varied topics."""
    text = resources.files("labkit.distill").joinpath("data/prompts.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def teacher_key(teacher: str, prompt_list: list, settings: dict) -> str:
    """A short hash naming the teacher (its spec and weight files), the prompts (texts or token
    ids) and the settings."""
    from labkit.models.loader import resolve

    folder = resolve(teacher)
    files = sorted((f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in folder.glob("*.safetensors"))
    blob = json.dumps({"teacher": str(folder.resolve()), "files": files, "prompts": prompt_list, **settings},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def generate_cached(model: Llama, tokenizer: Tokenizer, teacher: str, prompt_ids: list[list[int]], path: Path,
                    max_tokens: int, temperature: float, top_p: float, seed: int,
                    show_progress: bool = True) -> list[list[int]]:
    """Token ids of prompt + the teacher's sampled continuation, one list per prompt (prompt i
    sampled with seed + i); read from `path` if it exists, else generated and written there.

    On a CPU `model` is handed to an `LLM` engine, which merges its projections in place (the
    same function, fewer matmuls) and takes all prompts at once, 64 sequences at a time
    (continuous batching). On a GPU the engine loads `teacher` in float16 for its Numba
    kernels, and the prompts go in waves of 256: a small model's decode step costs about the
    same at 256 rows as at 64, and within a wave, once its prompts are in, every step decodes
    only and replays a CUDA graph. From one queue of thousands a new request joins whenever
    one finishes, so most steps would carry a prefill, and such a step runs eagerly, launch
    by launch (`labkit.profile.timeline.simulate` shows how many: docs/benchmarks.md)."""
    if path.is_file():
        return json.loads(path.read_text())["sequences"]
    from labkit.engine.llm import LLM
    from labkit.models.sampling import SamplingParams

    params = [SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed + i)
              for i in range(len(prompt_ids))]
    limit = max(map(len, prompt_ids)) + max_tokens + 1
    if model.lm_head.weight.is_cuda:   # the engine's GPU path: its own float16 copy and the Numba kernels
        llm, wave = LLM(teacher, device=str(model.lm_head.weight.device), backend="numba", max_batch_size=256,
                        max_model_len=limit), 256
    else:
        llm, wave = LLM(model, tokenizer=tokenizer, max_batch_size=64, max_model_len=limit), max(1, len(prompt_ids))
    outputs = []
    for first in range(0, len(prompt_ids), wave):
        outputs += llm.generate(prompt_ids[first:first + wave], params[first:first + wave], use_tqdm=show_progress)
    llm.close()
    eos = sorted(model.config.eos_ids)
    sequences = [list(prompt) + out.token_ids + ([eos[0]] if eos and out.finish_reason == "length" else [])
                 for prompt, out in zip(prompt_ids, outputs)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"teacher": teacher, "settings": {"max_tokens": max_tokens, "temperature": temperature,
                                                                "top_p": top_p, "seed": seed},
                               "sequences": sequences}))
    tmp.replace(path)
    return sequences


def teacher_answers(model: Llama, tokenizer: Tokenizer, teacher: str, prompt_list: list[str], cache: Path,
                    max_tokens: int = 160, temperature: float = 0.7, seed: int = 0,
                    show_progress: bool = True) -> list[list[int]]:
    """Token ids of chat prompt + teacher answer (top-p 0.9), one list per prompt, generated once and cached."""
    settings = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    path = Path(cache) / f"teacher-{teacher_key(teacher, prompt_list, settings)}.json"
    chats = [tokenizer.encode_chat([{"role": "user", "content": p}]) for p in prompt_list]
    return generate_cached(model, tokenizer, teacher, chats, path, max_tokens, temperature, 0.9, seed, show_progress)


def openings(tokenizer: Tokenizer, text: str, count: int, length: int = 32) -> list[list[int]]:
    """`count` openings of `length` tokens, each starting at a word of `text`, spread evenly
    over it (when `count` exceeds the words, each is used count / words times)."""
    starts = [m.start() for m in re.finditer(r"(?<!\S)\S", text)]   # the first character of every word
    snippets = [ids[:length] for ids in (tokenizer.encode(text[i:i + 16 * length]) for i in starts)]
    snippets = [ids for ids in snippets if len(ids) == length]
    if not snippets:
        raise ValueError(f"the text has no opening of {length} tokens")
    return [snippets[i * len(snippets) // count] for i in range(count)]


def teacher_continuations(model: Llama, tokenizer: Tokenizer, teacher: str, openings_ids: list[list[int]],
                          cache: Path, max_tokens: int = 256, temperature: float = 1.0, seed: int = 0,
                          show_progress: bool = True) -> list[list[int]]:
    """Token ids of opening + the teacher's continuation, sampled from its whole distribution
    (top-p 1), one list per opening, each with its own seed; generated once and cached."""
    settings = {"max_tokens": max_tokens, "temperature": temperature, "top_p": 1.0, "seed": seed}
    path = Path(cache) / f"continuations-{teacher_key(teacher, openings_ids, settings)}.json"
    return generate_cached(model, tokenizer, teacher, openings_ids, path, max_tokens, temperature, 1.0, seed,
                           show_progress)


def text_sequences(tokenizer: Tokenizer, text: str) -> list[list[int]]:
    """The text's paragraphs as token id lists."""
    return [tokenizer.encode(p) for p in text.split("\n\n") if p.strip()]


class Windows:
    """Sequences packed into one stream (separated by EOS) and cut into [seq_len + 1] windows."""

    def __init__(self, sequences: list[list[int]], seq_len: int, eos: int, seed: int = 0):
        stream = [t for s in sequences for t in (*s, eos)]
        n = (len(stream) - 1) // seq_len
        if n < 1:
            raise ValueError(f"{len(stream)} tokens do not fill one window of {seq_len + 1}")
        self.ids = torch.tensor(stream[: n * seq_len + 1])
        self.seq_len, self.seed, self.count = seq_len, seed, n
        self._order: tuple[int, torch.Tensor] | None = None   # (epoch, its permutation)

    def window(self, index: int) -> torch.Tensor:
        start = index * self.seq_len
        return self.ids[start:start + self.seq_len + 1]

    def batch(self, first: int, size: int) -> torch.Tensor:
        """Samples first .. first + size - 1 of the endless shuffled sequence, as [size, seq_len + 1].

        Epoch e visits every window once in the order of a permutation seeded by (seed, e)."""
        rows = []
        for k in range(first, first + size):
            epoch, i = divmod(k, self.count)
            rows.append(self.window(int(self._permutation(epoch)[i])))
        return torch.stack(rows)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._order is None or self._order[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._order = (epoch, torch.randperm(self.count, generator=g))
        return self._order[1]

    @property
    def tokens(self) -> int:
        return self.count * self.seq_len
