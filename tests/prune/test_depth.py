"""Depth pruning: block influence by an independent computation, the pruned model, its checkpoint."""
import json

import pytest
import torch

from labkit.errors import UserError
from labkit.models.llama import KVCache
from labkit.prune.checkpoint import save_pruned
from labkit.prune.depth import block_influence, drop_layers, layers_to_drop, nll_without, ppl_increase, prune_depth

from .conftest import tiny_ids, tiny_model


def layer_io(model, ids):
    """(input, output) hidden states of every decoder layer, caught by hooks on a full forward."""
    seen = []
    hooks = [layer.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
             for layer in model.model.layers]
    model(ids)
    for h in hooks:
        h.remove()
    return seen


def test_block_influence_is_one_minus_the_mean_token_cosine():
    model, ids = tiny_model(), tiny_ids()
    expected = []
    for x_in, x_out in layer_io(model, ids):
        cos = (x_in * x_out).sum(-1) / (x_in.norm(dim=-1) * x_out.norm(dim=-1))
        expected.append(1 - cos.mean().item())
    assert torch.allclose(block_influence(model, ids), torch.tensor(expected), atol=1e-5)


def test_a_block_that_adds_nothing_has_zero_influence_and_goes_first():
    model, ids = tiny_model(), tiny_ids()
    with torch.no_grad():  # layer 2 writes nothing into the residual stream
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    scores = block_influence(model, ids)
    assert abs(scores[2]) < 1e-6 and (scores[[0, 1, 3, 4, 5]] > 1e-4).all()
    pruned, report = prune_depth(model, ids, ratio=1 / 6)
    assert report["removed_layers"] == [2] and pruned.config.num_hidden_layers == 5
    assert torch.allclose(pruned(ids), model(ids), atol=1e-5)  # removing it changed nothing


def test_dropped_model_computes_the_forward_without_those_layers():
    model, ids = tiny_model(), tiny_ids()
    pruned = drop_layers(model, [1, 4])
    assert len(model.model.layers) == 6  # the source is left whole
    assert [layer.self_attn.layer for layer in pruned.model.layers] == [0, 1, 2, 3]
    logits = pruned(ids)
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).item()
    assert nll == pytest.approx(nll_without(model, ids, {1, 4}), rel=1e-5)
    # a KV cache sized by the new config: decoding token by token gives the full forward's logits
    cache = KVCache(pruned.config, ids.shape[0], ids.shape[1], torch.float32)
    steps = torch.cat([pruned(ids[:, t:t + 1], cache=cache) for t in range(8)], 1)
    assert torch.allclose(steps, logits[:, :8], atol=1e-4)


def test_ppl_ranking_is_the_perplexity_increase_of_each_block_alone():
    model, ids = tiny_model(), tiny_ids()
    increase = ppl_increase(model, ids)
    base = torch.tensor(nll_without(model, ids)).exp()
    for i in (0, 3):
        assert increase[i] == pytest.approx(float(torch.tensor(nll_without(model, ids, {i})).exp() - base), rel=1e-5)
    _, report = prune_depth(model, ids, ratio=0.5, rank="ppl")
    assert report["removed_layers"] == sorted(increase.argsort()[:3].tolist())


def test_ties_remove_the_later_layer_and_order_is_increasing():
    assert layers_to_drop(torch.tensor([0.5, 0.1, 0.3, 0.1]), 1) == [3]
    assert layers_to_drop(torch.tensor([0.5, 0.1, 0.3, 0.1]), 3) == [1, 2, 3]


@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.95, 1.0])
def test_a_ratio_that_removes_no_layer_or_every_layer_is_refused(ratio):
    with pytest.raises(ValueError, match="removes"):
        prune_depth(tiny_model(), tiny_ids(), ratio)


def test_checkpoint_round_trip_and_overwrite_rules(tmp_path):
    from labkit.models.llama import LlamaConfig
    from labkit.models.loader import build, read_tensors

    model, ids = tiny_model(), tiny_ids()
    pruned, report = prune_depth(model, ids, ratio=0.5)
    out = save_pruned(pruned, tmp_path / "ckpt", "tiny-source", None, report)
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 3 and config["prune"]["removed_layers"] == report["removed_layers"]
    assert config["labkit"] == {"source": "tiny-source", "method": "prune_layers"}
    loaded = build(LlamaConfig.from_hf(config), read_tensors(out), torch.float32)
    assert torch.equal(loaded(ids), pruned(ids))
    with pytest.raises(UserError, match="not empty"):
        save_pruned(pruned, out, "tiny-source", None, report)
    save_pruned(drop_layers(model, [0]), out, "tiny-source", None, {"method": "layers"}, force=True)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary folder left behind
