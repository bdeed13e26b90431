"""The OpenAI wire format: request schemas, their validation, response objects, errors.

Requests are parsed strictly (`"max_tokens": "10"` is a type error, as it is at OpenAI),
unknown fields are ignored (clients send options we do not implement, such as
`presence_penalty`), and every failure becomes an `APIError`, which the server renders as
OpenAI's `{"error": {"message", "type", "param", "code"}}` with a 4xx status. Range checks
that need the model (context length) happen in `check_lengths`, once the prompt is tokenized.
"""
from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labkit.models.sampling import SamplingParams

MAX_STOP = 4            # OpenAI accepts at most four stop sequences
TEMPERATURE_MAX = 2.0   # OpenAI's range is [0, 2]


class APIError(Exception):
    """A request the server refuses; rendered as an OpenAI-style JSON error."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    # "developer" is OpenAI's newer name for "system".
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    """The fields both endpoints share."""

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None   # the newer name of max_tokens

    def chat_messages(self) -> list[dict]:
        """Messages as the chat template wants them: plain strings, 'developer' as 'system'."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]  # type: ignore[list-item]
        return list(p)  # type: ignore[arg-type]


def parse(model: type[_Strict], body: object) -> _Strict:
    """Validate a decoded JSON body, turning the first problem into a 400 naming the field."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        errors = e.errors()
        err = errors[0]
        # A union (say `prompt: str | list[int]`) reports one error per member, each with the
        # member's name appended to the location: the parameter is what they have in common.
        same_field = [x["loc"] for x in errors if x["loc"][:1] == err["loc"][:1]]
        loc = _common_prefix(same_field)
        param = ".".join(str(x) for x in loc) or None
        if err["type"] == "missing":
            raise APIError(400, f"missing required parameter: '{param}'", param=param, code="missing_required_parameter") from None
        detail = err["msg"] if len(same_field) == 1 else "not one of the accepted types"
        raise APIError(400, f"invalid value for '{param}': {detail}", param=param, code="invalid_type") from None


def _common_prefix(locs: list[tuple]) -> tuple:
    prefix = locs[0]
    for loc in locs[1:]:
        n = 0
        while n < min(len(prefix), len(loc)) and prefix[n] == loc[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


def sampling_params(req: _Sampling, max_model_len: int) -> SamplingParams:
    """Range checks that need no prompt, then the engine's SamplingParams.

    `max_tokens` may be left out (then `check_lengths` fills in what the context leaves);
    a value beyond the model's context can never be honoured and is refused here.
    """
    _unsupported(req)
    if req.temperature is not None and not 0 <= req.temperature <= TEMPERATURE_MAX:
        raise APIError(400, f"temperature must be between 0 and {TEMPERATURE_MAX:g}, got {req.temperature:g}",
                       param="temperature", code="invalid_value")
    if req.top_p is not None and not 0 <= req.top_p <= 1:
        raise APIError(400, f"top_p must be between 0 and 1, got {req.top_p:g}", param="top_p", code="invalid_value")
    max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens
    param = "max_completion_tokens" if getattr(req, "max_completion_tokens", None) else "max_tokens"
    if max_tokens is not None and not 1 <= max_tokens <= max_model_len:
        raise APIError(400, f"{param} must be between 1 and the model's context length {max_model_len}, got {max_tokens}",
                       param=param, code="invalid_value")
    stop = req.stop_list()
    if len(stop) > MAX_STOP or any(not s for s in stop):
        raise APIError(400, f"stop takes up to {MAX_STOP} non-empty strings", param="stop", code="invalid_value")
    temperature = 1.0 if req.temperature is None else req.temperature
    top_p = 1.0 if req.top_p is None else req.top_p
    if top_p == 0:   # only the most likely token survives: that is greedy decoding
        temperature, top_p = 0.0, 1.0
    return SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens or max_model_len,
                          stop=stop, seed=req.seed)


def _unsupported(req: _Sampling) -> None:
    if req.n != 1:
        raise APIError(400, "only n=1 is supported", param="n", code="invalid_value")
    if isinstance(req, CompletionRequest):
        for name in ("echo", "logprobs", "suffix"):
            if getattr(req, name):  # False / None / 0 / "" mean "not asked for"
                raise APIError(400, f"'{name}' is not supported by this server", param=name, code="unsupported_parameter")
        if req.best_of not in (None, 1):
            raise APIError(400, "only best_of=1 is supported", param="best_of", code="invalid_value")


def check_lengths(params: SamplingParams, prompt_len: int, max_model_len: int, explicit: bool, param: str) -> SamplingParams:
    """Refuse prompts the context cannot hold; fit a defaulted max_tokens into what is left."""
    if prompt_len == 0:
        raise APIError(400, "the prompt is empty", param=param, code="invalid_value")
    room = max_model_len - prompt_len
    if room < 1:
        raise APIError(400, f"this model's maximum context length is {max_model_len} tokens, "
                            f"but the prompt has {prompt_len} tokens", param=param, code="context_length_exceeded")
    if not explicit:
        params.max_tokens = min(params.max_tokens, room)
    elif params.max_tokens > room:
        raise APIError(400, f"this model's maximum context length is {max_model_len} tokens; you requested "
                            f"{prompt_len + params.max_tokens} ({prompt_len} in the prompt, {params.max_tokens} "
                            "in the completion); reduce the prompt or max_tokens",
                       param="max_tokens", code="context_length_exceeded")
    return params


# ---- responses ----------------------------------------------------------------------------

def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def models_list(name: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "labkit"}]}


def chat_completion(rid: str, model: str, text: str, finish_reason: str, use: dict) -> dict:
    return {"id": rid, "object": "chat.completion", "created": now(), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": use}


def chat_chunk(rid: str, model: str, delta: dict, finish_reason: str | None = None, created: int | None = None) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": created or now(), "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}


def completion(rid: str, model: str, choices: list[tuple[str, str]], use: dict) -> dict:
    return {"id": rid, "object": "text_completion", "created": now(), "model": model,
            "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                        for i, (text, reason) in enumerate(choices)],
            "usage": use}


def completion_chunk(rid: str, model: str, index: int, text: str, finish_reason: str | None = None,
                     created: int | None = None) -> dict:
    return {"id": rid, "object": "text_completion", "created": created or now(), "model": model,
            "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}]}


def usage_chunk(rid: str, model: str, obj: str, use: dict, created: int | None = None) -> dict:
    """The last chunk when `stream_options.include_usage` is set: no choices, the totals."""
    return {"id": rid, "object": obj, "created": created or now(), "model": model, "choices": [], "usage": use}
