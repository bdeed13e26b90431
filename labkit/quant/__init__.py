"""Quantization: fewer bits for weights, activations and the KV cache, measured honestly.

One small module per idea, each with the reasoning in its docstring:

- `rtn`: round-to-nearest, symmetric / asymmetric, per tensor / channel / group, 2-8 bits.
- `qlinear`: `QuantLinear`, the drop-in linear layer holding int4 (AutoAWQ gemm layout,
  packed by `labkit.kernels.packing`) or int8 weights; torch path anywhere, Numba kernels on
  a GPU (`backend="numba"`); W8A8 with int8 activations.
- `calib`: calibration text and activation capture; the four places in a Llama block where
  a per-channel scale can move between two operators.
- `awq`: activation-aware scale search, clipping search, W4 g128.
- `smoothquant`: outlier migration with alpha, W8A8; and the naive W8A8 it fixes.
- `kv`: int8/int4 KV cache per token and head (`quant_policy` 8/4).
- `checkpoint`: save/load quantized folders (`quantization_config`), what `labkit lite` writes
  and `labkit.loading.load_model` reads.
- `cli`, `bench`: `labkit lite ...` and `labkit bench quant`.
"""
