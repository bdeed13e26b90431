"""`labkit prune ...` end to end on a tiny model folder: the folder loads in labkit and in
Hugging Face transformers with the same logits, `labkit eval` compares it with its source,
and bad input is one line with nothing written."""
import json

import pytest
import torch

from labkit.cli import main


def labkit(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def depth_pruned(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("pruned") / "layers"
    code = main(["prune", str(tiny_folder), "--method", "layers", "--ratio", "0.5", "--work-dir", str(out),
                "--calib-samples", "1", "--calib-seqlen", "128", "--json"])
    assert code == 0
    return out


def test_depth_checkpoint_loads_everywhere_with_the_same_logits(depth_pruned, tiny_folder):
    transformers = pytest.importorskip("transformers")
    from labkit.loading import load_model
    from labkit.prune.depth import drop_layers

    config = json.loads((depth_pruned / "config.json").read_text())
    removed = config["prune"]["removed_layers"]
    assert config["num_hidden_layers"] == 3 and len(removed) == 3
    model, tokenizer = load_model(str(depth_pruned))
    source, _ = load_model(str(tiny_folder))
    ids = torch.tensor([tokenizer.encode("Pruning removes whole blocks from a model.")])
    assert torch.equal(model(ids), drop_layers(source, removed)(ids))
    hf = transformers.AutoModelForCausalLM.from_pretrained(depth_pruned, dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, model(ids), atol=1e-4)


def test_a_pruned_checkpoint_quantizes_with_labkit_lite(capsys, depth_pruned, tmp_path):
    from labkit.loading import load_model
    from labkit.quant.qlinear import QuantLinear

    code, out, err = labkit(capsys, "lite", "rtn", depth_pruned, "--w-bits", "4", "--w-group-size", "32",
                            "--work-dir", tmp_path / "w4", "--json")
    assert code == 0, err
    model, _ = load_model(str(tmp_path / "w4"))
    assert len(model.model.layers) == 3 and isinstance(model.model.layers[2].mlp.down_proj, QuantLinear)
    config = json.loads((tmp_path / "w4" / "config.json").read_text())
    assert config["prune"]["method"] == "layers"  # what was done before quantizing stays on record


def test_width_checkpoint_loads_in_transformers_with_the_same_logits(capsys, tiny_folder, tmp_path):
    transformers = pytest.importorskip("transformers")
    from labkit.loading import load_model

    code, out, err = labkit(capsys, "prune", tiny_folder, "--method", "width", "--mlp", "96", "--heads", "2",
                            "--kv-heads", "1", "--hidden", "48", "--work-dir", tmp_path / "w",
                            "--calib-samples", "1", "--calib-seqlen", "128", "--json")
    assert code == 0, err
    assert json.loads(out)["parameters"] < json.loads(out)["source_parameters"]
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    assert (config["intermediate_size"], config["num_attention_heads"], config["num_key_value_heads"],
            config["hidden_size"], config["head_dim"]) == (96, 2, 1, 48, 16)
    model, tokenizer = load_model(str(tmp_path / "w"))
    ids = torch.tensor([tokenizer.encode("Width pruning keeps the config uniform.")])
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "w", dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, model(ids), atol=1e-4)


def test_eval_compares_a_pruned_checkpoint_with_its_source(capsys, depth_pruned, tiny_folder):
    code, out, err = labkit(capsys, "eval", depth_pruned, "--max-tokens", "64", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["reference"] == str(tiny_folder.resolve()) and result["kl"] > 0


def test_sparsegpt_checkpoint_holds_exact_zeros_in_the_pattern(capsys, tiny_folder, tmp_path):
    from safetensors.torch import load_file

    from labkit.loading import load_model

    code, out, err = labkit(capsys, "prune", tiny_folder, "--method", "sparsegpt", "--pattern", "2:4",
                            "--work-dir", tmp_path / "sgpt", "--calib-samples", "1", "--calib-seqlen", "128", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["linear_sparsity"] == 0.5 and result["calibration"] == {"dataset": "labkit", "samples": 1, "seqlen": 128}
    config = json.loads((tmp_path / "sgpt" / "config.json").read_text())
    assert config["prune"]["pattern"] == "2:4" and len(config["prune"]["layers"]) == 6
    w = load_file(tmp_path / "sgpt" / "model.safetensors")["model.layers.5.mlp.down_proj.weight"]
    assert ((w != 0).view(w.shape[0], -1, 4).sum(-1) <= 2).all()
    model, _ = load_model(str(tmp_path / "sgpt"))
    assert torch.equal(model.model.layers[5].mlp.down_proj.weight, w.float())


@pytest.mark.parametrize("args, message", [
    (["--method", "wanda", "--pattern", "2:3"], "does not divide"),
    (["--method", "wanda", "--pattern", "4:4"], "0 < N < M"),
    (["--method", "wanda", "--sparsity", "1.0"], "outside [0, 1)"),
    (["--method", "magnitude"], "either --sparsity"),
    (["--method", "width", "--heads", "5"], "the model has 4"),
    (["--method", "width", "--heads", "2", "--kv-heads", "2", "--mlp", "0"], "--mlp 0"),
])
def test_bad_oneshot_input_is_one_line_and_writes_nothing(capsys, tiny_folder, tmp_path, args, message):
    code, out, err = labkit(capsys, "prune", tiny_folder, "--work-dir", tmp_path / "out", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--ratio", "1.0"], "--ratio"),
    (["--ratio", "0.05"], "removes 0 of 6 layers"),
    ([], "needs --ratio"),
    (["--ratio", "0.5", "--calib-samples", "0"], "--calib-samples"),
])
def test_bad_input_is_one_line_and_writes_nothing(capsys, tiny_folder, tmp_path, args, message):
    code, out, err = labkit(capsys, "prune", tiny_folder, "--method", "layers", "--work-dir", tmp_path / "out",
                            "--calib-samples", "1", "--calib-seqlen", "128", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_non_empty_work_dir_needs_force(capsys, tiny_folder, tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    args = ["prune", tiny_folder, "--method", "layers", "--ratio", "0.5", "--work-dir", tmp_path,
            "--calib-samples", "1", "--calib-seqlen", "128"]
    code, _, err = labkit(capsys, *args)
    assert code == 2 and "--force" in err and (tmp_path / "keep.txt").read_text() == "precious"
    code, _, err = labkit(capsys, *args, "--force")
    assert code == 0, err
    assert not (tmp_path / "keep.txt").exists() and (tmp_path / "config.json").is_file()
