"""The official `openai` client works against the server unchanged, and greedy answers are
exactly the offline engine's."""
from __future__ import annotations

import pytest

from labkit.models.sampling import SamplingParams

openai = pytest.importorskip("openai")

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def oai(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def offline(llm, prompt, max_tokens):
    return llm.generate([prompt], SamplingParams(temperature=0, max_tokens=max_tokens))[0]


def test_models(oai):
    assert [m.id for m in oai.models.list().data] == ["embedded"]


def test_chat(oai, llm):
    r = oai.chat.completions.create(model="embedded", messages=QUESTION, max_tokens=8, temperature=0)
    want = offline(llm, llm.tokenizer.encode_chat(QUESTION), 8)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == want.text
    assert r.choices[0].finish_reason == want.finish_reason
    assert r.usage.prompt_tokens == len(want.prompt_token_ids)
    assert r.usage.completion_tokens == len(want.token_ids)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream(oai, llm):
    stream = oai.chat.completions.create(model="embedded", messages=QUESTION, max_tokens=8, temperature=0,
                                         stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    want = offline(llm, llm.tokenizer.encode_chat(QUESTION), 8)
    assert text == want.text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == want.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(want.token_ids)
    assert len({c.id for c in chunks}) == 1


def test_completions(oai, llm):
    r = oai.completions.create(model="embedded", prompt="The capital of France is", max_tokens=6, temperature=0)
    want = offline(llm, "The capital of France is", 6)
    assert r.object == "text_completion" and r.choices[0].text == want.text
    assert r.usage.completion_tokens == len(want.token_ids)


def test_completions_stream_batch(oai, llm):
    prompts = ["One, two, three,", "The sky is"]
    chunks = list(oai.completions.create(model="embedded", prompt=prompts, max_tokens=5, temperature=0, stream=True))
    for i, p in enumerate(prompts):
        text = "".join(c.choices[0].text for c in chunks if c.choices and c.choices[0].index == i)
        assert text == offline(llm, p, 5).text


def test_stop_and_seed(oai):
    base = dict(model="embedded", messages=[{"role": "user", "content": "Count from one to ten in words."}], max_tokens=24)
    full = oai.chat.completions.create(**base, temperature=0).choices[0].message.content
    word = full.split()[2].strip(",.")
    cut = oai.chat.completions.create(**base, temperature=0, stop=[word]).choices[0]
    assert word not in cut.message.content and full.startswith(cut.message.content)
    assert cut.finish_reason == "stop"
    sampled = [oai.chat.completions.create(**base, temperature=1.0, top_p=0.95, seed=7).choices[0].message.content
               for _ in range(2)]
    assert sampled[0] == sampled[1], "the same seed must give the same answer"


def test_multi_turn_hits_prefix_cache(oai):
    first = [{"role": "user", "content": "Tell me one fact about the Moon and explain it in detail, please."}]
    a = oai.chat.completions.create(model="embedded", messages=first, max_tokens=20, temperature=0)
    second = first + [{"role": "assistant", "content": a.choices[0].message.content},
                      {"role": "user", "content": "And one about Mars?"}]
    b = oai.chat.completions.create(model="embedded", messages=second, max_tokens=4, temperature=0)
    cached = b.usage.prompt_tokens_details.cached_tokens
    # the whole first turn is a prefix of the second prompt: its full blocks come from the cache
    assert cached >= 16 * ((a.usage.prompt_tokens) // 16) and cached < b.usage.prompt_tokens
