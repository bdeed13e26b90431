"""The front object: streaming, cancellation, abort, chat with prefix caching, validation."""
import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from labkit.engine import LLM, ChatSession, SamplingParams, StreamDelta


@pytest.fixture
def llm(tiny, tokenizer):
    engine = LLM(tiny, tokenizer=tokenizer, num_blocks=96, block_size=4, max_model_len=256)
    yield engine
    engine.close()


def wait_idle(llm, timeout=10.0):
    """Aborts from a stream's cleanup are applied by the engine thread; give it a moment."""
    end = time.time() + timeout
    while time.time() < end and (llm.stats()["blocks_used"] or llm.stats()["running"] or llm.stats()["waiting"]):
        time.sleep(0.02)


def test_stream_yields_the_same_tokens_and_text_as_generate(llm, tokenizer, h):
    prompts = h.prompts_of(tokenizer, 3)
    params = h.greedy(10)

    async def one(p, i):
        return [d async for d in llm.stream(p, params, request_id=f"s{i}")]

    async def main():
        return await asyncio.gather(*(one(p, i) for i, p in enumerate(prompts)))

    runs = asyncio.run(main())
    refs = h.reference(llm.model, tokenizer, prompts, params)
    for deltas, ref, p in zip(runs, refs, prompts):
        assert all(isinstance(d, StreamDelta) for d in deltas)
        assert [t for d in deltas for t in d.token_ids] == ref.token_ids
        assert "".join(d.text for d in deltas) == ref.text
        last = deltas[-1]
        assert last.finished and last.finish_reason == ref.finish_reason and not any(d.finished for d in deltas[:-1])
        assert (last.prompt_tokens, last.completion_tokens) == (len(p), len(ref.token_ids))
    wait_idle(llm)
    h.assert_no_leaks(llm)


@pytest.mark.parametrize("how", ["break", "aclose", "cancel"])
def test_stopping_a_stream_early_frees_its_blocks(llm, tokenizer, h, how):
    prompt = h.prompts_of(tokenizer, 1, lengths=(30,))[0]
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)

    async def main():
        stream = llm.stream(prompt, params, request_id="early")
        if how == "cancel":
            async def consume():
                async for _ in stream:
                    pass
            task = asyncio.ensure_future(consume())
            await asyncio.sleep(0.3)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return
        n = 0
        async for _ in stream:
            n += 1
            if n == 3:
                break
        if how == "aclose":
            await stream.aclose()

    asyncio.run(main())
    wait_idle(llm)
    h.assert_no_leaks(llm)


def test_abort_ends_the_stream_with_abort(llm, tokenizer, h):
    prompt = h.prompts_of(tokenizer, 1, lengths=(20,))[0]

    async def main():
        deltas = []
        async for d in llm.stream(prompt, SamplingParams(temperature=0, max_tokens=500, ignore_eos=True), "victim"):
            deltas.append(d)
            if len(deltas) == 2:
                llm.abort("victim")
        return deltas

    deltas = asyncio.run(main())
    assert deltas[-1].finished and deltas[-1].finish_reason == "abort" and len(deltas) < 50
    wait_idle(llm)
    h.assert_no_leaks(llm)


def test_stop_strings_and_seeded_sampling_match_generate(llm, tokenizer, h):
    from labkit.models.generate import generate

    prompt = h.prompts_of(tokenizer, 1, lengths=(12,))[0]
    free = generate(llm.model, tokenizer, prompt, h.greedy(12)).text
    stop = free.strip()[3:6] or free[:2]
    for params in (h.greedy(12, stop=[stop]), SamplingParams(temperature=0.9, top_p=0.9, top_k=50, seed=7, max_tokens=10),
                   SamplingParams(temperature=0.7, repetition_penalty=1.3, seed=3, max_tokens=10)):
        ref = generate(llm.model, tokenizer, prompt, params)
        out = llm.generate([prompt], params)[0]
        assert (out.token_ids, out.text, out.finish_reason) == (ref.token_ids, ref.text, ref.finish_reason), params


def test_chat_turn_n_recomputes_only_the_new_tokens(llm, tokenizer):
    session = ChatSession(system="You are terse.")
    params = SamplingParams(temperature=0, max_tokens=6)
    for message in ("Hello there.", "Tell me about printing presses.", "And about paper?"):
        llm.chat(session, message, params)
    bs = llm.engine.block_manager.block_size
    for prev, out in zip(session.outputs, session.outputs[1:]):
        history = prev.prompt_token_ids + prev.token_ids
        common = next((i for i, (a, b) in enumerate(zip(history, out.prompt_token_ids)) if a != b),
                      min(len(history), len(out.prompt_token_ids)))
        computed = len(out.prompt_token_ids) - out.cached_tokens
        new = len(out.prompt_token_ids) - common          # tokens this turn really adds
        # the cache holds every full block of the shared history whose K/V were computed
        # (the last sampled token never went through the model): at most one block more than new.
        assert out.cached_tokens == min(common, len(history) - 1, len(out.prompt_token_ids) - 1) // bs * bs
        assert new <= computed <= new + bs, (computed, new)
    assert len(session.messages) == 6 and session.messages[1]["role"] == "assistant"


def test_prompts_longer_than_max_model_len_are_refused(llm):
    with pytest.raises(ValueError, match="max_model_len"):
        llm.generate([[5] * 300], SamplingParams(max_tokens=2))
    with pytest.raises(ValueError, match="max_model_len"):
        llm.validate_prompt([5] * 256)

    async def main():
        async for _ in llm.stream([5] * 999):
            pass

    with pytest.raises(ValueError, match="max_model_len"):
        asyncio.run(main())
    out = llm.generate([[5] * 250], SamplingParams(temperature=0, max_tokens=50, ignore_eos=True))[0]
    assert len(out.token_ids) == 6 and out.finish_reason == "length"   # clipped to max_model_len


def test_stats_and_options(llm, tiny, tokenizer):
    s = llm.stats()
    for key in ("blocks_total", "blocks_free", "blocks_used", "prefix_cache_hit_tokens", "running", "waiting",
                "last_decode_tok_s"):
        assert key in s
    assert llm.max_model_len == 256 and s["blocks_total"] == 96
    with pytest.raises(ValueError, match="does not fit"):
        LLM(tiny, tokenizer=tokenizer, num_blocks=4, block_size=4, max_model_len=100)
    with pytest.raises(ValueError, match="scheduler"):
        LLM(tiny, tokenizer=tokenizer, num_blocks=8, scheduler="dynamic")
    with pytest.raises(ValueError, match="quant_policy"):
        LLM(tiny, tokenizer=tokenizer, num_blocks=8, quant_policy=2)
    # num_blocks from a memory fraction; max_model_len defaults to the model's
    auto = LLM(tiny, tokenizer=tokenizer, max_batch_size=2)
    assert auto.max_model_len == tiny.config.max_position_embeddings
    assert auto.stats()["blocks_total"] == 2 * 1024 // 16


def test_run_steps_serves_streams_from_the_calling_thread_and_hands_back_leftover_work(llm, tokenizer, h, monkeypatch):
    prompts = h.prompts_of(tokenizer, 3)
    params = h.greedy(10)
    expected = [o.token_ids for o in llm.generate(prompts, params)]
    stepped_in: set[int] = set()
    step = llm.engine.step

    def recording_step():
        stepped_in.add(threading.get_ident())
        return step()

    monkeypatch.setattr(llm.engine, "step", recording_step)

    async def clients():
        while llm._stepper is None:   # streams added before run_steps starts would wake the background worker
            await asyncio.sleep(0.001)

        async def one(p, i):
            return [t async for d in llm.stream(p, params, request_id=f"r{i}") for t in d.token_ids]
        return await asyncio.gather(*(one(p, i) for i, p in enumerate(prompts)))

    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(asyncio.run, clients())
        llm.run_steps(until=done.done)
        got = done.result()
    assert got == expected
    assert stepped_in == {threading.get_ident()}, "every step ran in the thread that called run_steps"
    assert llm._worker is None, "no background worker while a thread runs the steps"

    # a stream left running when run_steps returns is finished by the background worker
    stepped_in.clear()

    async def one_stream():
        return [t async for d in llm.stream(prompts[0], params, request_id="late") for t in d.token_ids]

    with ThreadPoolExecutor(1) as pool:
        late = pool.submit(asyncio.run, one_stream())
        llm.run_steps(until=lambda: llm.stats()["running"] > 0)   # give up after the first admission
        assert late.result(timeout=30) == expected[0]
    assert stepped_in - {threading.get_ident()}, "the background worker ran the steps left over"
    h.assert_no_leaks(llm)
