"""Chat turns on the engine (shared by the chat page and the terminal chat), and the model
selector's quantize-once cache."""
from __future__ import annotations

import asyncio
import json
import sys
import time
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


def test_page_engines_prepare_in_the_background(monkeypatch, llm):
    """Choosing a model prepares it while the live one keeps answering; then it is live for
    every tab, and the panels say what is live, what is being prepared and how far it got."""
    import threading
    from types import SimpleNamespace

    import torch

    from labkit.serve import engine_args, gradio_app

    built, release = [], threading.Event()

    def fake_build(spec, progress=None, **kw):
        progress("compiling the decode step at batch 1 (1/2)")
        release.wait(10)
        built.append((spec, kw))
        return SimpleNamespace(model=torch.nn.Linear(4, 4), stats=llm.stats)

    monkeypatch.setattr(engine_args, "build_engine", fake_build)
    monkeypatch.setattr(variants, "ensure", lambda model, key, progress=None: f"{model}/{key}")
    engines = gradio_app.Engines("embedded", {"max_batch_size": 4}, llm=llm)
    assert engines.get("fp") is llm and not built          # the engine it was given
    engines.prepare("w8")
    deadline = time.time() + 10
    while "compiling" not in engines.progress and time.time() < deadline:
        time.sleep(0.01)
    panel = gradio_app.engine_panel(engines)
    assert engines.llm is llm and engines.key == "fp"     # the live model still answers
    assert "live model:** full precision" in panel and "preparing W8" in panel and "batch 1 (1/2)" in panel
    release.set()
    while engines.key != "w8" and time.time() < deadline:
        time.sleep(0.01)
    assert engines.key == "w8" and built == [("embedded/w8", {"max_batch_size": 4})]
    assert asyncio.run(engines.aget("w8")) is engines.llm and len(built) == 1   # built once
    panel = gradio_app.engine_panel(engines)
    assert "live model:** W8" in panel and "preparing" not in panel
    engines.record_speed("w8", 42.0)
    table = gradio_app.models_panel(engines)
    row = next(line for line in table.splitlines() if line.startswith("| W8"))
    assert "◀" in row and "42.0" in row and "0 MiB" in row   # live, its speed, its (tiny) weight memory


def test_kv_panel_shows_running_and_cached_blocks(llm, wait_idle):
    from labkit.serve import gradio_app

    ids = llm.tokenizer.encode("word " * 40)
    llm.generate([ids], SamplingParams(temperature=0, max_tokens=2))
    s = wait_idle()
    panel = gradio_app.engine_panel(gradio_app.Engines("embedded", llm=llm))
    assert s["blocks_cached"] > 0 and f"0 running + {s['blocks_cached']} cached" in panel


def test_models_dir_offers_every_labkit_checkpoint(tmp_path):
    for name, record in (("w4", {"method": "awq"}), ("pipeline/pruned", {"method": "prune_wanda"}),
                         ("plain-hf", None)):
        folder = tmp_path / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"labkit": record} if record else {"model_type": "llama"}))
    offered = variants.choices("embedded", tmp_path)
    assert [k for _, k in offered[:3]] == ["fp", "w8", "w4-awq"]
    assert [(label, Path(k).name) for label, k in offered[3:]] == [("pipeline/pruned (prune_wanda)", "pruned"),
                                                                  ("w4 (awq)", "w4")]
    assert variants.ensure("embedded", offered[3][1]) == offered[3][1]   # a folder loads as it is
    with pytest.raises(UserError, match="no such folder"):
        variants.choices("embedded", tmp_path / "missing")
