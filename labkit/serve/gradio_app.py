"""The chat page behind `labkit chat`: streaming multi-turn chat on the engine, in Gradio.

`build_demo(model)` returns the `gr.Blocks` page without serving it (a notebook or a test
can build it cheaply); `launch(demo)` serves it on 127.0.0.1. Every answer comes from
`llm.stream` through `labkit.serve.conversation.stream_reply`, so several browser tabs
chatting at once share the engine's continuous batch, and the stop button, which cancels
the Gradio task, closes the stream and aborts the sequence.

The right-hand column holds the model selector (full precision, W8, W4 AWQ, and the
checkpoints of `--models-dir`; see `labkit.serve.variants`), the live panels and the
sampling settings. One engine serves every tab. Choosing another model prepares it in the
background (quantizing on first use, loading, compiling), with its progress in the page,
while the live model keeps answering; once ready it is the live model for every tab, and
every tab's selector and panel say so. The models table shows what each choice buys: its
decode speed here, its weight memory and its quality (`labkit eval`, measured once per
checkpoint in the background and cached next to it).
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from typing import AsyncIterator

from labkit.errors import UserError
from labkit.models.sampling import SamplingParams
from labkit.serve import variants
from labkit.serve.conversation import TurnStats, stream_reply

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # no calls home from a course machine

DEFAULT_PORT = 6006          # LMDeploy's Gradio port
STATS_EVERY_S = 1.0          # panel refresh while the page is open
REPETITION_PENALTY = 1.1     # the page's default: at 1.0 the W4 model looped in 2 of 32 sampled answers, at 1.1 in
                             # none, while 1.2 ran 3 answers in 4 to the token limit (tools/repetition_check.py)
EVAL_TOKENS = 2048           # tokens of the eval text a choice's quality is measured on
CSS = ("#stats table, #engine table, #models table {font-size: 0.85em} "
       "#engine th, #models th {white-space: nowrap} footer {display: none !important}")


class Engines:
    """The engine behind the page, shared by every tab; one at a time (a laptop holds one
    model comfortably, not three). Answers already streaming finish on the engine they
    started on."""

    def __init__(self, model: str, engine_kwargs: dict | None = None, llm=None, models_dir: str | None = None,
                 measure: bool = False):
        self.model, self.kwargs, self.measure = model, dict(engine_kwargs or {}), measure
        self.choices = variants.choices(model, models_dir)
        self.labels = {key: label for label, key in self.choices}
        self.key, self.llm = ("fp", llm) if llm is not None else (None, None)
        self.preparing: str | None = None    # the choice being quantized / loaded / compiled
        self.progress = ""                   # its latest progress line
        self.error: str | None = None        # why the last preparation failed
        self.measured: dict[str, dict] = {}  # key -> {"tok_s": ..., "weight_bytes": ...}
        self.evaluating: str | None = None
        self._lock = threading.Lock()
        if llm is not None:
            self._loaded("fp", llm)

    def label(self, key: str | None) -> str:
        return self.labels.get(key, str(key))

    def get(self, key: str = "fp"):
        """The engine for choice `key`, quantizing and loading it if needed (blocking)."""
        with self._lock:
            if key != self.key or self.llm is None:
                from labkit.serve import engine_args

                self.preparing, self.progress, self.error = key, "", None
                try:
                    spec = variants.ensure(self.model, key, self._progress)
                    self._progress(f"loading {spec}")
                    llm = engine_args.build_engine(spec, progress=self._progress, **self.kwargs)
                    self.llm, self.key = llm, key   # the old engine goes once its last answer ends
                    self._loaded(key, llm)
                except UserError as e:
                    self.error = f"{self.label(key)}: {e}"
                    raise
                finally:
                    self.preparing = None
            return self.llm

    async def aget(self, key: str = "fp"):
        if key == self.key and self.llm is not None:
            return self.llm
        return await asyncio.to_thread(self.get, key)

    def prepare(self, key: str) -> None:
        """Make `key` the live model, in the background (the live one answers meanwhile)."""
        if key == self.key or key == self.preparing:
            return

        def work():
            try:
                self.get(key)
            except UserError:
                pass   # kept in self.error, shown by the panel
            if self.measure:
                self.measure_quality(self.key)

        threading.Thread(target=work, name=f"labkit-prepare-{key}", daemon=True).start()

    def _progress(self, line: str) -> None:
        self.progress = line[-160:]

    def _loaded(self, key: str, llm) -> None:
        from labkit.quant.qlinear import weight_bytes

        self.measured.setdefault(key, {})["weight_bytes"] = weight_bytes(llm.model, float_bytes=None)   # as held

    def record_speed(self, key: str, tok_s: float | None) -> None:
        if tok_s:
            self.measured.setdefault(key, {})["tok_s"] = tok_s

    # ------------------------------------------------------------------ quality
    def quality(self, key: str) -> dict | None:
        try:
            return json.loads(variants.eval_file(self.model, key).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def measure_quality(self, key: str | None) -> None:
        """Run `labkit eval` on a loaded choice once (in a child process, at low priority) and
        cache its JSON next to the checkpoint."""
        spec = key and variants.spec_for(self.model, key)
        if spec is None or self.evaluating or self.quality(key) is not None:
            return
        self.evaluating = key
        try:
            done = subprocess.run(variants.eval_command(spec, EVAL_TOKENS), capture_output=True, text=True,
                                  preexec_fn=lambda: os.nice(10))
            if done.returncode == 0:
                path = variants.eval_file(self.model, key)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(done.stdout.strip().splitlines()[-1])
        except OSError:
            pass
        finally:
            self.evaluating = None


def answer_panel(stats: TurnStats | None, model: str | None = None) -> str:
    """The last answer's figures, as a small Markdown table."""
    if stats is None:
        return "| last answer | |\n|---|---|\n| time to first token | – |\n| tokens/s | – |\n| prefix-cache hit | – |"
    ttft = f"{stats.ttft_s:.2f} s" if stats.ttft_s is not None else "…"
    speed = f"{stats.decode_tok_s:.1f}" if stats.decode_tok_s is not None else "…"
    hit = f"{stats.cached_tokens} of {stats.prompt_tokens} prompt tokens"
    rows = [("time to first token", ttft), ("tokens/s", speed), ("prefix-cache hit", hit),
            ("tokens generated", str(stats.completion_tokens))]
    if model:
        rows.insert(0, ("model", model))
    if stats.dropped_turns:
        rows.append(("turns left out (context full)", str(stats.dropped_turns)))
    return "| last answer | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def engine_panel(engines: Engines) -> str:
    """The live model, what is being prepared, and the engine's counters."""
    lines = [f"**live model:** {engines.label(engines.key) if engines.llm is not None else 'loads with the first message'}"]
    if engines.preparing is not None:
        lines.append(f"**preparing {engines.label(engines.preparing)}** (the live model answers meanwhile): "
                     f"{engines.progress or 'starting'}…")
    elif engines.error:
        lines.append(f"**could not prepare** {engines.error}")
    if engines.evaluating is not None:
        lines.append(f"measuring the quality of {engines.label(engines.evaluating)} (`labkit eval`)…")
    if engines.llm is not None:
        s = engines.llm.stats()
        rows = [("KV blocks used", f"{s['blocks_used']} running + {s['blocks_cached']} "
                                   f"cached / {s['blocks_total']}"),
                ("prefix-cache hits (total)", f"{s['prefix_cache_hit_tokens']} tokens"),
                ("running / waiting", f"{s['running']} / {s['waiting']}")]
        lines.append("| engine | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows))
    return "\n\n".join(lines)


def models_panel(engines: Engines) -> str:
    """What each choice buys: decode speed (last answer here), weight memory, quality."""
    rows = []
    for label, key in engines.choices:
        m, q = engines.measured.get(key, {}), engines.quality(key)
        speed = f"{m['tok_s']:.1f}" if "tok_s" in m else "–"
        memory = f"{m['weight_bytes'] / 2**20:.0f} MiB" if "weight_bytes" in m else "–"
        quality = "–"
        if q:
            quality = f"ppl {q['ppl']:.2f}"
            if q.get("kl") is not None:
                quality += f", KL {q['kl']:.4f}, top-1 {q['top1']:.1%}"
        live = " ◀" if key == engines.key else ""
        rows.append(f"| {label}{live} | {speed} | {memory} | {quality} |")
    return ("| model | tokens/s | weights | quality (eval text) |\n|---|---|---|---|\n" + "\n".join(rows) +
            f"\n\nQuality: `labkit eval` on {EVAL_TOKENS} tokens, against the model a checkpoint came from.")


def build_demo(model: str = "embedded", llm=None, engine_kwargs: dict | None = None, title: str | None = None,
               models_dir: str | None = None, measure: bool = False):
    """The chat page as a `gr.Blocks` (not served yet: see `launch`).

    Pass `llm` to chat with an engine you already have; otherwise the page builds one for
    `model` on first use. `engine_kwargs` go to `LLM(...)` for every model it builds;
    `models_dir` adds the checkpoints found there to the selector; with `measure`, each model
    that goes live has its quality measured once in the background (`labkit eval`).
    """
    import gradio as gr

    engines = Engines(model, engine_kwargs, llm, models_dir, measure)
    if measure and llm is not None:
        threading.Thread(target=engines.measure_quality, args=("fp",), daemon=True).start()
    name = title or f"labkit chat · {model}"

    async def respond(message: str, history: list[dict], system: str, temperature: float, top_p: float,
                      max_tokens: float, repetition_penalty: float) -> AsyncIterator[tuple]:
        message = (message or "").strip()
        if not message:
            yield message, history, history, gr.skip()
            return
        turns = history + [{"role": "user", "content": message}]
        shown = turns + [{"role": "assistant", "content": ""}]
        yield "", shown, shown, answer_panel(None)
        try:
            key = engines.key or engines.preparing or "fp"
            llm = await engines.aget(key)   # the live model (the first message waits for one, or builds it)
            params = SamplingParams(temperature=float(temperature), top_p=float(top_p), max_tokens=int(max_tokens),
                                    repetition_penalty=float(repetition_penalty))
            text, stats = "", None
            async for piece, stats in stream_reply(llm, turns, system, params):
                text += piece
                shown = turns + [{"role": "assistant", "content": text}]
                yield gr.skip(), shown, shown, answer_panel(stats, engines.label(key))
        except UserError as e:
            raise gr.Error(str(e)) from None
        if stats is not None:
            engines.record_speed(key, stats.decode_tok_s)
        yield gr.skip(), shown, shown, answer_panel(stats, engines.label(key))

    def choose(key: str) -> str:
        if key:
            engines.prepare(key)
        return engine_panel(engines)

    def refresh(shown_key: str | None):
        """Every tab, every second: the panels, and the selector set to the live model when it changed."""
        live = engines.key
        if live == shown_key or live is None:
            return engine_panel(engines), models_panel(engines), gr.skip(), shown_key
        return engine_panel(engines), models_panel(engines), gr.update(value=live), live

    with gr.Blocks(title=name, analytics_enabled=False) as demo:
        gr.Markdown(f"### {name}\nStreaming chat on the labkit engine. Conversations are re-sent every turn; "
                    "the prefix cache recognises what it has already computed.")
        history = gr.State([])
        shown_key = gr.State(engines.key)
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
                models_md = gr.Markdown(models_panel(engines), elem_id="models")
            with gr.Column(scale=2):
                variant = gr.Dropdown(choices=engines.choices, value=engines.key or "fp",
                                      label="model (shared by every tab: choosing one prepares it, then switches)",
                                      elem_id="variant")
                stats_md = gr.Markdown(answer_panel(None), elem_id="stats")
                engine_md = gr.Markdown(engine_panel(engines), elem_id="engine")
                system = gr.Textbox(label="system prompt", lines=2, placeholder="(the model's default)",
                                    elem_id="system")
                temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="temperature (0: greedy)",
                                        elem_id="temperature")
                top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="top-p")
                penalty = gr.Slider(1.0, 2.0, value=REPETITION_PENALTY, step=0.05, label="repetition penalty (1: none)",
                                    elem_id="repetition_penalty")
                max_tokens = gr.Slider(8, 1024, value=256, step=8, label="max tokens", elem_id="max_tokens")

        inputs = [msg, history, system, temperature, top_p, max_tokens, penalty]
        outputs = [msg, chatbot, history, stats_md]
        limit = int((engine_kwargs or {}).get("max_batch_size") or 32)   # tabs share the batch
        events = [trigger(respond, inputs, outputs, concurrency_limit=limit, show_progress="hidden")
                  for trigger in (msg.submit, send.click)]
        stop.click(None, None, None, cancels=events)
        clear.click(lambda: ("", [], [], answer_panel(None)), None, [msg, chatbot, history, stats_md],
                    cancels=events)
        chatbot.clear(lambda: ([], answer_panel(None)), None, [history, stats_md], cancels=events)  # its trash icon
        variant.input(choose, [variant], [engine_md], queue=False)   # the user's choice, not the refresh's
        demo.load(lambda: (gr.update(value=engines.key or "fp"), engines.key), None, [variant, shown_key],
                  queue=False)
        gr.Timer(STATS_EVERY_S).tick(refresh, [shown_key], [engine_md, models_md, variant, shown_key],
                                     show_progress="hidden", queue=False)
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
