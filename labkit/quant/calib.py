"""What AWQ and SmoothQuant share: calibration batches, the per-layer activation capture,
and the four places in a Llama layer where a per-channel scale can move between two
operators without changing what the model computes.

In a pre-norm block, a linear layer's input channels are the output channels of the operator
before it. Multiplying the consumers' weight columns by `s` and dividing the producer's
outputs by `s` leaves the product unchanged, but moves magnitude between activations and
weights, which is the whole trick of both methods:

    group      producer (divided by s)        consumers (columns multiplied by s)
    attn_in    input_layernorm.weight          q_proj, k_proj, v_proj
    mlp_in     post_attention_layernorm.weight gate_proj, up_proj
    v_o        v_proj rows                     o_proj
    up_down    up_proj rows                    down_proj   (silu(gate) * up is linear in up)

With grouped-query attention o_proj has `H * D` input channels but v_proj only `H_kv * D`
outputs: each value head feeds `H / H_kv` query heads, so one scale per value channel is
shared by those `H / H_kv` o_proj columns (`ScaleGroup.repeat`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from labkit.errors import UserError


@dataclass
class ScaleGroup:
    name: str
    producer: nn.Module                    # an RMSNorm or an nn.Linear
    consumers: list[nn.Module]             # linears reading the producer's output
    names: list[str]                       # their attribute names (keys of the captured inputs)
    inspect: Callable[[torch.Tensor], torch.Tensor]  # the block whose output AWQ compares
    repeat: int = 1                        # consumer channels per producer channel (GQA v -> o)
    head_dim: int = 1

    def expand(self, s: torch.Tensor) -> torch.Tensor:
        """Per-producer-channel scales -> per-consumer-input-channel scales."""
        if self.repeat == 1:
            return s
        kv = s.view(-1, 1, self.head_dim).expand(-1, self.repeat, self.head_dim)
        return kv.reshape(-1)

    def reduce(self, stat: torch.Tensor, how: str = "mean") -> torch.Tensor:
        """Per-consumer-channel statistic -> per-producer-channel (mean or max over sharers)."""
        if self.repeat == 1:
            return stat
        grouped = stat.view(-1, self.repeat, self.head_dim)
        return (grouped.mean(1) if how == "mean" else grouped.amax(1)).reshape(-1)

    @torch.no_grad()
    def fold(self, s: torch.Tensor) -> None:
        """Divide the producer's outputs by s and multiply the consumers' inputs by s."""
        s = s.to(self.producer.weight.dtype)
        if isinstance(self.producer, nn.Linear):
            self.producer.weight.div_(s[:, None])
            if self.producer.bias is not None:
                self.producer.bias.div_(s)
        else:
            self.producer.weight.div_(s)
        wide = self.expand(s)
        for linear in self.consumers:
            linear.weight.mul_(wide[None, :])


def scale_groups(layer: nn.Module, config, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[ScaleGroup]:
    """The four scale groups of one decoder layer (see the module docstring). `rope`, the
    (cos, sin) of the calibration positions, is needed only to call the attention group's
    `inspect` (AWQ's search)."""
    attn, mlp = layer.self_attn, layer.mlp
    repeat = config.num_attention_heads // config.num_key_value_heads
    qkv, gate_up = ["q_proj", "k_proj", "v_proj"], ["gate_proj", "up_proj"]
    return [
        ScaleGroup("attn_in", layer.input_layernorm, [getattr(attn, n) for n in qkv], qkv,
                   lambda x: attn(x, *rope, None)),
        ScaleGroup("mlp_in", layer.post_attention_layernorm, [getattr(mlp, n) for n in gate_up], gate_up, mlp),
        ScaleGroup("v_o", attn.v_proj, [attn.o_proj], ["o_proj"], attn.o_proj, repeat, config.head_dim),
        ScaleGroup("up_down", mlp.up_proj, [mlp.down_proj], ["down_proj"], mlp.down_proj),
    ]


def check_architecture(model: nn.Module) -> None:
    """The folding above assumes the Llama block; refuse anything else in one line."""
    from labkit.models.llama import Llama

    if not isinstance(model, Llama):
        raise UserError(f"quantization supports labkit's Llama-family models, not {type(model).__name__}")
    for name, module in model.named_modules():
        if type(module) is not nn.Linear and name.rsplit(".", 1)[-1].endswith("_proj"):
            raise UserError(f"{name} is already a {type(module).__name__}: quantize a full-precision model")


# ---------------------------------------------------------------------------- calibration data


def calibration_ids(tokenizer, text: str | None = None, n_samples: int = 8, seqlen: int = 512) -> torch.Tensor:
    """Token windows [n, seqlen] of the calibration text (labkit's own by default)."""
    from labkit.texts import calibration_text

    ids = tokenizer.encode(text if text is not None else calibration_text())
    n = min(n_samples, len(ids) // seqlen)
    if n < 1:
        raise UserError(f"the calibration text has {len(ids)} tokens, fewer than one window of {seqlen}")
    return torch.tensor(ids[: n * seqlen]).view(n, seqlen)


def dataset_text(name: str, n_chars: int = 2_000_000) -> str:
    """Calibration text from a Hugging Face dataset (`wikitext2`, `c4`, `pileval`), for users
    who are online. Offline, or without the `datasets` package, this is a one-line error."""
    known = {
        "wikitext2": ("wikitext", "wikitext-2-raw-v1", "train", "text"),
        "c4": ("allenai/c4", "en", "validation", "text"),
        "pileval": ("mit-han-lab/pile-val-backup", None, "validation", "text"),
    }
    if name not in known:
        raise UserError(f"unknown calibration dataset {name!r} (known: {', '.join(known)}, or omit it for labkit's own text)")
    try:
        import datasets
    except ImportError as e:
        raise UserError("--calib-dataset needs the `datasets` package (pip install datasets); "
                        "omit it to use labkit's own calibration text") from e
    path, config, split, column = known[name]
    try:
        data = datasets.load_dataset(path, config, split=split, streaming=True)
        parts, size = [], 0
        for row in data:
            parts.append(row[column])
            size += len(row[column])
            if size >= n_chars:
                break
    except Exception as e:  # offline, moved dataset: the same to the user
        raise UserError(f"cannot load calibration dataset {name!r} ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else ''}); offline? omit --calib-dataset "
                        "to use labkit's own calibration text") from e
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------- capture


class LayerRunner:
    """Runs a model's decoder layers one at a time on calibration batches.

    `capture(layer)` runs a layer on the current input `x` and returns the inputs of its
    linears and its output; `advance(output)` makes that output the next layer's input.
    Running one layer at a time keeps memory at one layer's activations, and lets a
    quantizer change a layer before the next one is reached.
    """

    def __init__(self, model: nn.Module, ids: torch.Tensor):
        self.model = model
        with torch.no_grad():
            self.x = model.model.embed_tokens(ids.to(model.lm_head.weight.device))
            positions = torch.arange(ids.shape[1], device=self.x.device)[None]  # broadcasts over any batch
            self.rope = model.rope(positions, self.x.dtype)

    @torch.no_grad()
    def capture(self, layer: nn.Module) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(inputs of each *_proj linear by attribute name, the layer's output)."""
        from labkit.models.llama import LINEAR_NAMES

        inputs, hooks = {}, []
        for attr in LINEAR_NAMES:
            for parent in (layer.self_attn, layer.mlp):
                if isinstance(getattr(parent, attr, None), nn.Module):
                    hooks.append(getattr(parent, attr).register_forward_hook(
                        lambda m, args, out, a=attr: inputs.__setitem__(a, args[0].detach())))
        try:
            out = layer(self.x, *self.rope, None)
        finally:
            for h in hooks:
                h.remove()
        return inputs, out

    def advance(self, output: torch.Tensor) -> None:
        self.x = output
