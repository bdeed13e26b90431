"""Pruning: remove weights, channels, heads or whole layers, and measure what it costs and buys.

One small module per idea, each with the reasoning in its docstring:

- `depth`: block influence (and the perplexity ranking), dropping whole decoder layers.
- `checkpoint`: pruned folders (an ordinary Hugging Face config plus a `prune` section),
  what `labkit prune` writes and every MODEL argument reads.
- `cli`: `labkit prune ...`.
"""
