"""The sensitivity scans: one part pruned at a time, everything restored after."""
import torch

from labkit.eval import evaluate
from labkit.prune import masks
from labkit.prune.oneshot import layer_linears
from labkit.prune.sensitivity import input_norms_by_layer, plot_scans, pruned, scan_kinds, scan_layers

from .conftest import tiny_ids, tiny_model


def test_pruned_prunes_only_the_named_parts_and_restores_them():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pruned(model, [(1, "down_proj"), (4, "q_proj")], 0.5):
        assert masks.sparsity_of(model.model.layers[1].mlp.down_proj.weight) == 0.5
        assert masks.sparsity_of(model.model.layers[4].self_attn.q_proj.weight) == 0.5
        assert masks.sparsity_of(model.model.layers[1].self_attn.q_proj.weight) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_wanda_scan_uses_the_dense_input_norms_per_row():
    model, calib = tiny_model(), tiny_ids()
    norms = input_norms_by_layer(model, calib)
    with pruned(model, [(2, "up_proj")], 0.25, norms):
        w = layer_linears(model.model.layers[2])["up_proj"].weight
        assert ((w == 0).sum(1) == 16).all()  # a quarter of every row's 64 inputs


def test_scans_give_a_row_per_cell_and_zero_sparsity_is_the_dense_model():
    model, ids = tiny_model(), tiny_ids(n=96, batch=1)[0].tolist()
    dense = evaluate(model, ids).ppl
    kinds = scan_kinds(model, ids, sparsities=(0.0, 0.6), kinds=("k_proj", "down_proj"))
    assert [(r["kind"], r["sparsity"]) for r in kinds] == [("k_proj", 0.0), ("k_proj", 0.6), ("down_proj", 0.0),
                                                           ("down_proj", 0.6)]
    assert kinds[0]["ppl"] == dense and kinds[1]["ppl"] != dense
    layers = scan_layers(model, ids, 0.5)
    assert [r["layer"] for r in layers] == list(range(6)) and all(r["ppl"] != dense for r in layers)
    axes = plot_scans(kinds, layers, dense)
    assert len(axes[0].lines) == 3 and len(axes[1].patches) == 6
