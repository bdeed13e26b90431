"""The chat page behind `labkit chat`: streaming multi-turn chat on the engine, in Gradio.

`build_demo(model)` returns the `gr.Blocks` page without serving it (a notebook or a test
can build it cheaply); `launch(demo)` serves it on 127.0.0.1. Every answer comes from
`llm.stream` through `labkit.serve.conversation.stream_reply`, so several browser tabs
chatting at once share the engine's continuous batch, and the stop button, which cancels
the Gradio task, closes the stream and aborts the sequence.

The right-hand column holds the sampling settings, the model selector (full precision, W8,
W4 AWQ: quantized on first use, then loaded from the cache, see `labkit.serve.variants`) and
the live panel: time to first token and decode speed of the last answer, how much of its
prompt the prefix cache supplied, and the engine's KV-block use.
"""
from __future__ import annotations

import asyncio
import os
import threading
from typing import AsyncIterator

from labkit.errors import UserError
from labkit.models.sampling import SamplingParams
from labkit.serve import variants
from labkit.serve.conversation import TurnStats, stream_reply

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # no calls home from a course machine

DEFAULT_PORT = 6006          # LMDeploy's Gradio port
STATS_EVERY_S = 1.0          # engine panel refresh while the page is open
CSS = "#stats table, #engine table {font-size: 0.85em} footer {display: none !important}"


class Engines:
    """The engine behind the page. Choosing another variant replaces it (one at a time:
    a laptop holds one model comfortably, not three); answers already streaming finish on
    the engine they started on."""

    def __init__(self, model: str, engine_kwargs: dict | None = None, llm=None):
        self.model, self.kwargs = model, dict(engine_kwargs or {})
        self.key, self.llm = ("fp", llm) if llm is not None else (None, None)
        self.preparing: str | None = None   # the variant being quantized / loaded, for the panel
        self._lock = threading.Lock()

    def get(self, key: str = "fp"):
        """The engine for variant `key`, quantizing and loading it if needed (blocking)."""
        with self._lock:
            if key != self.key or self.llm is None:
                from labkit.serve.engine_args import build_engine

                self.preparing = key
                try:
                    spec = variants.ensure(self.model, key)
                    self.llm = None          # let the old engine go before the new one takes memory
                    self.llm = build_engine(spec, **self.kwargs)
                    self.key = key
                finally:
                    self.preparing = None
            return self.llm

    async def aget(self, key: str = "fp"):
        if key == self.key and self.llm is not None:
            return self.llm
        return await asyncio.to_thread(self.get, key)


def answer_panel(stats: TurnStats | None) -> str:
    """The last answer's figures, as a small Markdown table."""
    if stats is None:
        return "| last answer | |\n|---|---|\n| time to first token | – |\n| tokens/s | – |\n| prefix-cache hit | – |"
    ttft = f"{stats.ttft_s:.2f} s" if stats.ttft_s is not None else "…"
    speed = f"{stats.decode_tok_s:.1f}" if stats.decode_tok_s is not None else "…"
    hit = f"{stats.cached_tokens} of {stats.prompt_tokens} prompt tokens"
    rows = [("time to first token", ttft), ("tokens/s", speed), ("prefix-cache hit", hit),
            ("tokens generated", str(stats.completion_tokens))]
    if stats.dropped_turns:
        rows.append(("turns left out (context full)", str(stats.dropped_turns)))
    return "| last answer | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def engine_panel(llm, preparing: str | None = None) -> str:
    """The engine's counters: KV blocks, prefix-cache hits, queue (or what is being prepared)."""
    if preparing is not None:
        label = variants.VARIANTS[preparing].label
        return (f"| engine | |\n|---|---|\n| state | preparing {label}: a variant used for the first time is "
                "quantized first (W8: about a minute, W4 AWQ: several minutes on a CPU)… |")
    if llm is None:
        return "| engine | |\n|---|---|\n| state | loads with the first message |"
    s = llm.stats()
    rows = [("KV blocks used", f"{s['blocks_used']} / {s['blocks_total']}"),
            ("prefix-cache hits (total)", f"{s['prefix_cache_hit_tokens']} tokens"),
            ("running / waiting", f"{s['running']} / {s['waiting']}")]
    return "| engine | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def build_demo(model: str = "embedded", llm=None, engine_kwargs: dict | None = None, title: str | None = None):
    """The chat page as a `gr.Blocks` (not served yet: see `launch`).

    Pass `llm` to chat with an engine you already have; otherwise the page builds one for
    `model` on first use. `engine_kwargs` go to `LLM(...)` for every variant it builds.
    """
    import gradio as gr

    engines = Engines(model, engine_kwargs, llm)
    name = title or f"labkit chat · {model}"

    async def respond(message: str, history: list[dict], system: str, temperature: float, top_p: float,
                      max_tokens: float, key: str) -> AsyncIterator[tuple]:
        message = (message or "").strip()
        if not message:
            yield message, history, history, gr.skip(), gr.skip()
            return
        turns = history + [{"role": "user", "content": message}]
        shown = turns + [{"role": "assistant", "content": ""}]
        yield "", shown, shown, answer_panel(None), gr.skip()
        try:
            llm = await engines.aget(key or "fp")
            params = SamplingParams(temperature=float(temperature), top_p=float(top_p),
                                    max_tokens=int(max_tokens))
            text, stats = "", None
            async for piece, stats in stream_reply(llm, turns, system, params):
                text += piece
                shown = turns + [{"role": "assistant", "content": text}]
                yield gr.skip(), shown, shown, answer_panel(stats), engine_panel(llm)
        except UserError as e:
            raise gr.Error(str(e)) from None
        yield gr.skip(), shown, shown, answer_panel(stats), engine_panel(llm)

    async def switch(key: str) -> AsyncIterator[str]:
        yield engine_panel(None, key)
        try:
            llm = await engines.aget(key)
        except UserError as e:
            raise gr.Error(str(e)) from None
        yield engine_panel(llm)

    def refresh() -> str:
        return engine_panel(engines.llm, engines.preparing)

    with gr.Blocks(title=name, analytics_enabled=False) as demo:
        gr.Markdown(f"### {name}\nStreaming chat on the labkit engine. Conversations are re-sent every turn; "
                    "the prefix cache recognises what it has already computed.")
        history = gr.State([])
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="chat", height=430, elem_id="chatbot", feedback_options=None,
                                     buttons=["copy_all"],
                                     placeholder="Ask something: the answer streams in token by token.")
                with gr.Row():
                    msg = gr.Textbox(show_label=False, placeholder="Type a message, press Enter",
                                     scale=6, elem_id="message", autofocus=True)
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                with gr.Row():
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                    clear = gr.Button("Clear", elem_id="clear")
            with gr.Column(scale=2):
                variant = gr.Dropdown(choices=variants.choices(model), value="fp", label="model / quantization",
                                      elem_id="variant")
                with gr.Row():
                    stats_md = gr.Markdown(answer_panel(None), elem_id="stats")
                    engine_md = gr.Markdown(engine_panel(llm), elem_id="engine")
                system = gr.Textbox(label="system prompt", lines=2, placeholder="(the model's default)",
                                    elem_id="system")
                temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="temperature (0: greedy)",
                                        elem_id="temperature")
                top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="top-p")
                max_tokens = gr.Slider(8, 1024, value=256, step=8, label="max tokens", elem_id="max_tokens")

        inputs = [msg, history, system, temperature, top_p, max_tokens, variant]
        outputs = [msg, chatbot, history, stats_md, engine_md]
        limit = int((engine_kwargs or {}).get("max_batch_size") or 32)   # tabs share the batch
        events = [trigger(respond, inputs, outputs, concurrency_limit=limit, show_progress="hidden")
                  for trigger in (msg.submit, send.click)]
        stop.click(None, None, None, cancels=events)
        clear.click(lambda: ("", [], [], answer_panel(None)), None, [msg, chatbot, history, stats_md],
                    cancels=events)
        chatbot.clear(lambda: ([], answer_panel(None)), None, [history, stats_md], cancels=events)  # its trash icon
        variant.change(switch, [variant], [engine_md])
        gr.Timer(STATS_EVERY_S).tick(refresh, None, [engine_md], show_progress="hidden", queue=False)
    demo.engines = engines   # for tests and notebooks: the engine behind the page
    return demo


def launch(demo, server_name: str = "127.0.0.1", server_port: int | None = DEFAULT_PORT,
           inbrowser: bool = False, block: bool = True, quiet: bool = False) -> str:
    """Serve the page (127.0.0.1 unless told otherwise); returns its URL.

    `block=False` returns at once and keeps serving from a background thread (notebooks,
    tests); `demo.close()` stops it.
    """
    import gradio as gr

    try:
        _, url, _ = demo.queue().launch(
            server_name=server_name, server_port=server_port, inbrowser=inbrowser, share=False,
            ssr_mode=False, prevent_thread_lock=not block, quiet=quiet, show_error=True,
            theme=gr.themes.Soft(primary_hue="indigo"), css=CSS, footer_links=[])
    except OSError as e:
        raise UserError(f"cannot serve the chat page on {server_name}:{server_port}: {e}") from None
    return url
