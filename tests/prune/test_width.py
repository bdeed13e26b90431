"""Width pruning: importance by hooks, the narrower model equals the wide one with the removed
contributions zeroed, GQA-regular head choice, bad widths."""
import copy

import pytest
import torch

from labkit.models.llama import KVCache
from labkit.prune.width import choose_heads, importance, prune_width

from .conftest import tiny_ids, tiny_model


def test_importance_is_the_l2_norm_of_each_channel_and_head_over_tokens():
    model, ids = tiny_model(), tiny_ids()
    seen = {}
    layer = model.model.layers[2]
    hooks = [layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("down", a[0])),
             layer.self_attn.o_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("o", a[0]))]
    model(ids)
    for h in hooks:
        h.remove()
    scores = importance(model, ids)
    assert torch.allclose(scores.mlp[2], seen["down"].reshape(-1, 128).norm(dim=0), rtol=1e-4)
    heads = torch.stack([seen["o"][..., 16 * h:16 * (h + 1)].norm() for h in range(4)])
    assert torch.allclose(scores.heads[2], heads, rtol=1e-4)


def test_choose_heads_keeps_whole_groups_or_the_same_count_in_each():
    scores = torch.tensor([1.0, 9.0, 2.0, 3.0, 8.0, 0.5])  # 3 KV groups of 2 query heads: sums 10, 5, 8.5
    q, kv = choose_heads(scores, 3, 4, 2)
    assert kv.tolist() == [0, 2] and q.tolist() == [0, 1, 4, 5]
    q, kv = choose_heads(scores, 3, 3, 3)
    assert kv.tolist() == [0, 1, 2] and q.tolist() == [1, 3, 4]


def masked_copy(model, scores_kept):
    """The wide model with the contributions of removed MLP channels / query heads zeroed."""
    wide = copy.deepcopy(model)
    for layer, (mlp_keep, head_keep) in zip(wide.model.layers, scores_kept):
        with torch.no_grad():
            if mlp_keep is not None:
                drop = torch.ones(128, dtype=torch.bool)
                drop[mlp_keep] = False
                layer.mlp.down_proj.weight[:, drop] = 0
            if head_keep is not None:
                drop = torch.ones(4, dtype=torch.bool)
                drop[head_keep] = False
                layer.self_attn.o_proj.weight.view(64, 4, 16)[:, drop] = 0
    return wide


def test_mlp_and_per_group_head_pruning_remove_exactly_those_contributions():
    model, ids = tiny_model(), tiny_ids()
    scores = importance(model, ids)
    pruned, report = prune_width(model, ids, mlp=48, heads=2)  # one query head in each of the 2 groups
    assert report == {"method": "width", "mlp": 48, "heads": 2, "kv_heads": 2, "hidden": None}
    assert pruned.config.intermediate_size == 48 and pruned.config.num_attention_heads == 2
    kept = []
    for i in range(6):
        mlp_keep = scores.mlp[i].argsort(descending=True)[:48]
        q, _ = choose_heads(scores.heads[i], 2, 2, 2)
        kept.append((mlp_keep, q))
    assert torch.allclose(pruned(ids), masked_copy(model, kept)(ids), atol=1e-4)
    cache = KVCache(pruned.config, 2, 8, torch.float32)  # the narrower KV cache decodes as the forward
    steps = torch.cat([pruned(ids[:, t:t + 1], cache=cache) for t in range(8)], 1)
    assert torch.allclose(steps, pruned(ids[:, :8]), atol=1e-4)


def test_removing_a_whole_kv_group_whose_values_are_zero_changes_nothing():
    model, ids = tiny_model(), tiny_ids()
    with torch.no_grad():
        for layer in model.model.layers:  # KV head 0 carries nothing: its query heads 0 and 1 output zero
            layer.self_attn.v_proj.weight[:16] = 0
    pruned, _ = prune_width(model, ids, heads=2, kv_heads=1)
    assert pruned.config.num_key_value_heads == 1
    assert pruned.model.layers[0].self_attn.k_proj.weight.shape == (16, 64)
    assert torch.allclose(pruned(ids), model(ids), atol=1e-5)


def test_hidden_pruning_narrows_every_reader_and_writer_of_the_residual_stream():
    model, ids = tiny_model(), tiny_ids()
    pruned, _ = prune_width(model, ids, hidden=48)
    assert pruned.config.hidden_size == 48 and pruned.config.head_dim == 16
    assert pruned.model.embed_tokens.weight.shape == (256, 48) and pruned.lm_head.weight is pruned.model.embed_tokens.weight
    assert pruned.model.layers[3].self_attn.o_proj.weight.shape == (48, 64)
    assert pruned(ids).shape == (2, 64, 256)
    assert model.config.hidden_size == 64 and model.model.embed_tokens.weight.shape == (256, 64)  # source untouched


@pytest.mark.parametrize("kwargs, message", [
    (dict(mlp=0), "--mlp 0"), (dict(mlp=129), "has 128"), (dict(heads=5), "--heads 5"), (dict(heads=0), "--heads 0"),
    (dict(heads=3), "same number"), (dict(heads=4, kv_heads=1), "at most the 2"), (dict(kv_heads=3), "--kv-heads 3"),
    (dict(hidden=0), "--hidden 0"), (dict(), "at least one"),
])
def test_impossible_widths_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prune_width(tiny_model(), tiny_ids(), **kwargs)
