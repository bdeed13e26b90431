"""Tokenizer, chat template and streaming detokenization.

A thin layer over Hugging Face `tokenizers` (the Rust BPE) plus the model's Jinja chat template,
rendered the way transformers renders it. `StreamDecoder` turns token ids into text as they
arrive: it holds back bytes of an unfinished UTF-8 character and text that might be the start
of a stop string, so a streamed answer never shows something it later takes back.
"""
from __future__ import annotations

import json
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as RustTokenizer


def _raise(message: str):
    raise jinja2.exceptions.TemplateError(message)


class Tokenizer:
    """Text <-> token ids, and chat messages -> prompt text."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.backend = RustTokenizer.from_file(str(folder / "tokenizer.json"))
        cfg_path = folder / "tokenizer_config.json"
        self.config = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        self.bos_token = _token_text(self.config.get("bos_token"))
        self.eos_token = _token_text(self.config.get("eos_token"))
        self.add_bos = bool(self.config.get("add_bos_token", False)) and self.bos_token is not None
        template = self.config.get("chat_template")
        if isinstance(template, list):  # several named templates: take the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self.chat_template = env.from_string(template) if template else None
        self.eos_token_ids = {self.backend.token_to_id(self.eos_token)} if self.eos_token else set()
        self.eos_token_ids.discard(None)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if self.add_bos if add_bos is None else add_bos:
            ids = [self.backend.token_to_id(self.bos_token)] + ids
        return ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render chat messages ({"role", "content"}) into the prompt text the model was tuned on."""
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template")
        return self.chat_template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token or "", eos_token=self.eos_token or "")

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        # The template writes any BOS itself, so none is added here.
        return self.encode(self.apply_chat_template(messages, add_generation_prompt), add_bos=False)


def _token_text(tok) -> str | None:
    return tok.get("content") if isinstance(tok, dict) else tok


class StreamDecoder:
    """Incremental detokenization with stop strings.

    `push(token_id)` returns the text that is now final; `finish()` the rest. After a stop
    string appears, `stopped` is True and the text ends just before it.
    """

    def __init__(self, tokenizer: Tokenizer, stop: list[str] | tuple[str, ...] = ()):
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.ids: list[int] = []
        self.text = ""          # all text decoded so far (complete characters only)
        self.emitted = 0        # how much of `text` has been handed out
        self.stopped = False
        self._prefix = self._read = 0

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(token_id)
        # Decode a short window, not everything: from `_prefix` (a few tokens back, so BPE
        # merges at the seam come out right) against the text already read up to `_read`.
        before = self.tokenizer.decode(self.ids[self._prefix:self._read])
        after = self.tokenizer.decode(self.ids[self._prefix:])
        if after.endswith("\ufffd"):  # an unfinished UTF-8 character: wait for its other bytes
            return ""
        self.text += after[len(before):]
        self._prefix, self._read = self._read, len(self.ids)
        return self._release()

    def _release(self) -> str:
        for s in self.stop:
            at = self.text.find(s, max(0, self.emitted - len(s) + 1))
            if at != -1:
                self.text, self.stopped = self.text[:at], True
        hold = 0 if self.stopped else self._partial_stop()
        end = max(self.emitted, len(self.text) - hold)
        out, self.emitted = self.text[self.emitted:end], end
        return out

    def _partial_stop(self) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:n]):
                    best = max(best, n)
                    break
        return best

    def finish(self) -> str:
        out, self.emitted = self.text[self.emitted:], len(self.text)
        return out
