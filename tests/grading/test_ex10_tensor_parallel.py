"""Exercise 10 (tensor-parallel shards): solutions score full marks, stubs zero, typical mistakes lose points.

Kinds of mistake covered: the wrong dimension for each kind of split, the rank ignored, the
bias added on every rank, no refusal of uneven splits, the bias zeroed in place (an input
modified), and the byte count without the ring's factor, the embedding or the MLP's all-reduce.
Boundaries: one rank (the whole layer, no bytes), layers without a bias."""
import pytest

EXERCISE = "ex10_tensor_parallel"


def test_solution_full_marks_and_stub_zero(g):
    g.assert_full_and_zero(EXERCISE)


@pytest.mark.parametrize("old, new, check, hint", [
    # column-parallel slicing the inputs
    ("return weight[part], None if bias is None else bias[part]",
     "return weight[:, rank * weight.shape[1] // world:(rank + 1) * weight.shape[1] // world], bias",
     "column_shards_side_by_side_give_the_layer", "block of the inputs"),
    # row-parallel slicing the outputs
    ("return weight[:, part], bias", "return weight[rank * weight.shape[0] // world:(rank + 1) * weight.shape[0] // world], bias",
     "row_shard_partial_sums_add_up_to_the_layer", "block of the outputs"),
    # the rank ignored: every rank takes block 0
    ("part = slice(rank * n // world, (rank + 1) * n // world)", "part = slice(0, n // world)",
     "column_shards_side_by_side_give_the_layer", "same block"),
    ("part = slice(rank * k // world, (rank + 1) * k // world)", "part = slice(0, k // world)",
     "row_shard_partial_sums_add_up_to_the_layer", "same block"),
    # the bias kept on every rank
    ("    if bias is not None and rank != 0:\n        bias = torch.zeros_like(bias)\n", "",
     "row_shard_partial_sums_add_up_to_the_layer", "every rank"),
    # None for the other ranks' bias
    ("bias = torch.zeros_like(bias)", "bias = None", "row_shard_partial_sums_add_up_to_the_layer", "zeros of the bias"),
    # the bias zeroed in place
    ("bias = torch.zeros_like(bias)", "bias = bias.zero_()", "the_whole_layer_is_left_alone", "in place"),
    # uneven splits not refused
    ("    if n % world:\n        raise ValueError(f\"{world} ranks cannot split {n} output features evenly\")\n", "",
     "uneven_splits_are_refused", "ValueError"),
    # the message once instead of the ring's 2 (N-1)/N
    ("return messages * 2 * (world - 1) / world * hidden_size * bytes_per_value",
     "return messages * hidden_size * bytes_per_value if world > 1 else 0.0",
     "bytes_per_token_match_the_ring_all_reduce", "2 (world - 1) / world"),
    # the embedding's all-reduce forgotten
    ("messages = 2 * num_layers + 1", "messages = 2 * num_layers", "bytes_per_token_match_the_ring_all_reduce",
     "embedding"),
    # one all-reduce per layer
    ("messages = 2 * num_layers + 1", "messages = num_layers + 1", "bytes_per_token_match_the_ring_all_reduce",
     "Two all-reduces per layer"),
    # bytes_per_value ignored
    ("* hidden_size * bytes_per_value", "* hidden_size * 2", "bytes_per_token_match_the_ring_all_reduce", "4 bytes"),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), check, hint)
