"""Models: the readable Llama forward, its tokenizer, loaders and simple generation."""
from labkit.models.llama import KVCache, Llama, LlamaConfig
from labkit.models.loader import load, resolve
from labkit.models.tokenizer import StreamDecoder, Tokenizer

__all__ = ["KVCache", "Llama", "LlamaConfig", "StreamDecoder", "Tokenizer", "load", "resolve"]
