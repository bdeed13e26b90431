"""Serving: the OpenAI-compatible API server and the Gradio chat page, both on the engine.

Import the piece you need (`labkit.serve.api_server`, `labkit.serve.gradio_app`,
`labkit.serve.client`); this package imports nothing itself, so `labkit --help` stays
instant and FastAPI / Gradio load only when a command uses them. See docs/serving.md.
"""
