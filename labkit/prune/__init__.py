"""Pruning: remove weights, channels, heads or whole layers, and measure what it costs and buys.

One small module per idea, each with the reasoning in its docstring:

- `masks`: importance scores (magnitude, Wanda) and masks (per row, whole layer, N:M).
- `sparsegpt`: one-shot Optimal Brain Surgeon pruning with weight updates, block by block.
- `oneshot`: every projection of a model pruned layer by layer on calibration activations.
- `depth`: block influence (and the perplexity ranking), dropping whole decoder layers.
- `width`: activation importance of MLP channels, heads (whole KV groups, or the same count
  in each) and embedding channels; the same narrower widths in every layer.
- `sensitivity`: perplexity with one projection kind or one layer pruned at a time.
- `semistructured`: 2:4 weights as PyTorch's compressed semi-structured tensors (GPU).
- `checkpoint`: pruned folders (an ordinary Hugging Face config plus a `prune` section),
  what `labkit prune` writes and every MODEL argument reads.
- `cli`, `bench`: `labkit prune ...` and `labkit bench prune`.
"""
