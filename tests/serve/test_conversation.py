"""Chat turns on the engine (shared by the chat page and the terminal chat), and the model
selector's quantize-once cache."""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from labkit.errors import UserError
from labkit.models.sampling import SamplingParams
from labkit.serve import conversation, variants


def turns(n: int, words: int = 40) -> list[dict]:
    out = []
    for i in range(n):
        out += [{"role": "user", "content": f"question {i} " + "blah " * words},
                {"role": "assistant", "content": f"answer {i} " + "yes " * words}]
    return out + [{"role": "user", "content": "last question"}]


def test_fit_prompt_drops_oldest_turns(llm):
    tok = llm.tokenizer
    ids, max_tokens, dropped = conversation.fit_prompt(tok, turns(1), None, 4096, 64)
    assert dropped == 0 and max_tokens == 64
    ids, max_tokens, dropped = conversation.fit_prompt(tok, turns(6), "be brief", 300, 64)
    assert dropped > 0 and len(ids) + max_tokens <= 300
    assert tok.decode(ids).count("last question") == 1 and "be brief" in tok.decode(ids)
    with pytest.raises(UserError, match="too long"):
        conversation.fit_prompt(tok, [{"role": "user", "content": "blah " * 500}], None, 300, 64)


def test_stream_reply_matches_engine_and_reports(llm, wait_idle):
    history = [{"role": "user", "content": "What is the capital of France?"}]
    params = SamplingParams(temperature=0, max_tokens=8)

    async def run():
        pieces, stats = [], None
        async for piece, stats in conversation.stream_reply(llm, history, None, params):
            pieces.append(piece)
        return "".join(pieces), stats

    text, stats = asyncio.run(run())
    want = llm.generate([llm.tokenizer.encode_chat(history)], params)[0]
    assert text == want.text and stats.completion_tokens == len(want.token_ids)
    assert stats.ttft_s is not None and stats.finish_reason == want.finish_reason
    assert stats.prompt_tokens == len(want.prompt_token_ids)


def test_closing_a_reply_aborts(llm, wait_idle):
    history = [{"role": "user", "content": "Tell me a long story."}]

    async def first_piece_then_close():
        gen = conversation.stream_reply(llm, history, None, SamplingParams(temperature=0, max_tokens=300))
        await gen.__anext__()
        await gen.aclose()

    start = llm.stats()["steps"]
    asyncio.run(first_piece_then_close())
    s = wait_idle()
    assert s["running"] == 0 and s["blocks_used"] == 0 and llm.stats()["steps"] - start < 50


@pytest.fixture
def fake_lite(tmp_path, monkeypatch):
    """`labkit lite` replaced by a script that writes a tiny 'checkpoint' and counts its runs."""
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    script = ("import json, pathlib, sys; out = pathlib.Path(sys.argv[2]); out.mkdir(parents=True); "
              "(out / 'config.json').write_text(json.dumps({'quantization_config': {'m': sys.argv[1]}})); "
              f"open({str(runs)!r}, 'a').write('x')")

    def command(model, key, work_dir):
        if key == "w8":
            return [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"]
        return [sys.executable, "-c", script, key, str(work_dir)]

    monkeypatch.setattr(variants, "lite_command", command)
    return runs


def test_variants_quantize_once_and_cache(fake_lite):
    assert variants.ensure("embedded", "fp") == "embedded"
    first = variants.ensure("embedded", "w4-awq")
    assert Path(first) == variants.variant_dir("embedded", "w4-awq") and variants.is_quantized(first)
    assert variants.ensure("embedded", "w4-awq") == first and fake_lite.read_text() == "x"   # built once
    assert [k for _, k in variants.choices(first)] == ["fp"]          # a quantized model is offered as is
    assert variants.ensure(first, "w8") == first
    with pytest.raises(UserError, match="boom"):
        variants.ensure("embedded", "w8")
    leftovers = [p.name for p in variants.variant_dir("embedded", "w8").parent.iterdir()]
    assert leftovers == ["w4-awq"], "a failed quantization left a folder behind"
    with pytest.raises(UserError, match="unknown variant"):
        variants.ensure("embedded", "w3")


def test_lite_commands_are_the_documented_ones(tmp_path):
    awq = variants.lite_command("embedded", "w4-awq", tmp_path)
    assert awq[1:] == ["-m", "labkit", "lite", "auto_awq", "embedded", "--w-bits", "4", "--w-group-size", "128",
                       "--work-dir", str(tmp_path)]
    assert variants.lite_command("embedded", "w8", tmp_path)[3:8] == ["lite", "rtn", "embedded", "--w-bits", "8"]
    assert json.dumps(variants.choices("embedded"))


def test_page_engines_switch_variants(monkeypatch, llm):
    """The selector swaps the page's engine, once per variant; the panel says what is prepared."""
    from labkit.serve import engine_args, gradio_app

    built, seen_preparing = [], []

    def fake_build(spec, **kw):
        seen_preparing.append(engines.preparing)
        built.append((spec, kw))
        return f"engine for {spec}"

    monkeypatch.setattr(engine_args, "build_engine", fake_build)
    monkeypatch.setattr(variants, "ensure", lambda model, key: f"{model}/{key}")
    engines = gradio_app.Engines("embedded", {"max_batch_size": 4}, llm=llm)
    assert engines.get("fp") is llm and not built          # the engine it was given
    assert engines.get("w8") == "engine for embedded/w8" and engines.key == "w8"
    assert asyncio.run(engines.aget("w8")) == "engine for embedded/w8" and len(built) == 1
    assert built[0][1] == {"max_batch_size": 4} and seen_preparing == ["w8"] and engines.preparing is None
    assert "preparing W8" in gradio_app.engine_panel(None, "w8")
    assert "KV blocks used" in gradio_app.engine_panel(llm)
