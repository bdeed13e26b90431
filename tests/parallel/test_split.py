"""What each rank keeps (no processes: the slices are checked against the whole layer), and
the splits that are refused before any process starts."""
from __future__ import annotations

import multiprocessing

import pytest
import torch
from torch import nn

from labkit.engine.parallel.group import preflight
from labkit.engine.parallel.shard import Comm, VocabParallelEmbedding, check_split, slice_inputs, slice_outputs
from labkit.models import LlamaConfig
from labkit.quant.qlinear import QuantLinear


def config(heads=4, kv=2, mlp=128, head_dim=16) -> LlamaConfig:
    return LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=mlp, num_hidden_layers=1,
                       num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim)


@pytest.mark.parametrize("cfg, world, group, int4, message", [
    (config(heads=9, kv=3), 2, None, False, "9 attention heads"),
    (config(heads=12, kv=3), 2, None, False, "3 KV heads"),
    (config(mlp=130), 4, None, False, "130 columns"),
    (config(), 2, 64, False, "o_proj gets 32 input rows"),        # 2 heads x 16 per rank, groups of 64
    (config(mlp=192, head_dim=32), 2, 64, False, "down_proj gets 96"),
    (config(heads=8, kv=4, head_dim=4), 4, None, True, "k_proj gets 4 output columns"),
])
def test_refused_splits(cfg, world, group, int4, message):
    with pytest.raises(ValueError, match=message):
        check_split(cfg, world, group, int4)


@pytest.mark.parametrize("world, kv", [(2, 2), (4, 2), (4, 1), (1, 2)])
def test_accepted_splits(world, kv):
    check_split(config(kv=kv), world, 16, True)


def layers(bits: int | None):
    torch.manual_seed(0)
    dense = nn.Linear(128, 64, bias=True)
    return dense if bits is None else QuantLinear.from_linear(dense, bits, 32)


@pytest.mark.parametrize("bits", [None, 4, 8])
def test_column_and_row_slices_add_up_to_the_layer(bits):
    layer, x, world = layers(bits), torch.randn(3, 128), 2
    full = layer(x)
    cols = [slice_outputs(layer, torch.arange(r * 32, (r + 1) * 32)) for r in range(world)]
    assert torch.equal(torch.cat([c(x) for c in cols], -1), full)   # column-parallel: side by side
    rows = [slice_inputs(layer, r * 64, (r + 1) * 64, keep_bias=r == 0) for r in range(world)]
    total = sum(part(x[:, r * 64:(r + 1) * 64]) for r, part in enumerate(rows))   # what the all-reduce adds
    torch.testing.assert_close(total, full, rtol=1e-5, atol=1e-5)


def test_quantized_rows_must_be_whole_groups():
    with pytest.raises(ValueError, match="would split a group"):
        slice_inputs(layers(4), 16, 48, keep_bias=True)
    with pytest.raises(ValueError, match="whole words of 8"):
        slice_outputs(layers(4), torch.arange(4, 36))


class NoPeers(Comm):
    """One rank's view, with the all-reduce left out (the test adds the ranks up itself)."""

    def all_reduce(self, x):
        return x


def test_vocab_parallel_embedding_sums_to_the_embedding():
    full = nn.Embedding(101, 8)   # 101 rows: the last rank's slice is padded
    ids = torch.tensor([[0, 50, 51, 100, 7]])
    parts = [VocabParallelEmbedding(full, 101, NoPeers(r, 2)) for r in range(2)]
    assert [p.num_embeddings for p in parts] == [51, 51]
    assert torch.equal(parts[0](ids) + parts[1](ids), full(ids))
    assert torch.equal(parts[1](ids)[0, 0], torch.zeros(8))   # token 0 is rank 0's


def test_embedded_model_at_tp2_is_refused_before_any_process_starts():
    from labkit.engine import LLM

    with pytest.raises(ValueError, match="9 attention heads"):
        LLM("embedded", tp=2)
    assert not multiprocessing.active_children()


def test_int4_checkpoint_groups_checked_from_its_config(int4_dir):
    preflight(str(int4_dir), None, 2, torch.device("cpu"))   # groups of 32: whole on both ranks
    with pytest.raises(ValueError, match="o_proj gets 16 input rows"):
        preflight(str(int4_dir), None, 4, torch.device("cpu"))


@pytest.mark.slow   # two CLI processes (~5 s each to import torch)
def test_cli_refuses_a_bad_split_in_one_line():
    import subprocess
    import sys

    for args, message in [(["--tp", "2"], "9 attention heads"), (["--tp", "0"], "--tp must be >= 1")]:
        r = subprocess.run([sys.executable, "-m", "labkit", "serve", "api_server", "--server-port", "0", *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
