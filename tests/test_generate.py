"""Simple generation: cache vs no cache, EOS, stop strings, streaming."""
from labkit.models.generate import generate, generate_ids, stream
from labkit.models.sampling import SamplingParams


def test_cache_and_no_cache_agree(embedded):
    model, tok = embedded
    prompt = tok.encode("The three primary colours are")
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    assert list(generate_ids(model, prompt, params)) == list(generate_ids(model, prompt, params, use_cache=False))


def test_chat_answer_stops_at_eos(embedded):
    model, tok = embedded
    ids = tok.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    out = generate(model, tok, ids, SamplingParams(temperature=0, max_tokens=40))
    assert out.finish_reason == "stop" and out.token_ids[-1] == 2
    assert "Paris" in out.text


def test_stop_string_and_stream_agree(embedded):
    model, tok = embedded
    ids = tok.encode_chat([{"role": "user", "content": "Describe the sea in three sentences."}])
    free = generate(model, tok, ids, SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)).text
    stop = free.split()[len(free.split()) // 2]  # a word from the middle of the free answer
    params = SamplingParams(temperature=0, max_tokens=30, stop=[stop])
    cut = generate(model, tok, ids, params)
    assert cut.finish_reason == "stop" and cut.text == free[:free.index(stop)]
    assert "".join(stream(model, tok, ids, params)) == cut.text


def test_max_tokens_is_a_length_finish(embedded):
    model, tok = embedded
    out = generate(model, tok, "Once upon a time", SamplingParams(temperature=0.8, seed=3, max_tokens=5, ignore_eos=True))
    assert out.finish_reason == "length" and len(out.token_ids) == 5
