"""`labkit lite ...` end to end on a tiny model folder, `labkit eval` on its output, and the errors."""
import json

import pytest

from labkit.cli import main


def labkit(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_rtn_checkpoint_then_eval_against_its_source(capsys, tiny_folder, tmp_path):
    code, out, err = labkit(capsys, "lite", "rtn", tiny_folder, "--w-bits", "4", "--w-group-size", "32",
                            "--work-dir", tmp_path / "w4", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["quantization_config"]["quant_method"] == "awq" and result["padded_layers"] == []
    code, out, err = labkit(capsys, "eval", tmp_path / "w4", "--max-tokens", "64", "--json")
    assert code == 0, err
    ev = json.loads(out)
    assert ev["reference"] == str(tiny_folder.resolve()) and ev["kl"] > 0 and 0 < ev["top1"] <= 1
    code, out, err = labkit(capsys, "lite", "rtn", tmp_path / "w4", "--work-dir", tmp_path / "again")
    assert code != 0 and "already quantized" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "again").exists() or not any((tmp_path / "again").iterdir())


def test_auto_awq_and_smooth_quant_write_loadable_folders(capsys, tiny_folder, tmp_path):
    from labkit.loading import load_model
    from labkit.quant.qlinear import QuantLinear

    for method, extra in (("auto_awq", ["--w-group-size", "128"]), ("smooth_quant", [])):
        code, out, err = labkit(capsys, "lite", method, tiny_folder, "--work-dir", tmp_path / method,
                                "--calib-samples", "1", "--calib-seqlen", "128", *extra, "--json")
        assert code == 0, err
        model, _ = load_model(str(tmp_path / method))
        assert isinstance(model.model.layers[0].mlp.down_proj, QuantLinear)
    # group 128 does not divide hidden 64: inputs are padded, and the output says so
    assert sorted(json.loads((tmp_path / "auto_awq" / "config.json").read_text())["labkit"]["padded_layers"]) == \
        ["gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]  # down_proj: K = 128


def test_kv_policy_eval_defaults_to_the_float_cache_of_the_same_model(capsys, tiny_folder):
    code, out, err = labkit(capsys, "eval", tiny_folder, "--quant-policy", "4", "--max-tokens", "64", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["quant_policy"] == 4 and result["reference"] == str(tiny_folder) and result["kl"] > 0


@pytest.mark.parametrize("args, message", [
    (["rtn", "--w-group-size", "48"], "power of two"),
    (["auto_awq", "--calib-dataset", "wikitext2"], "calibration"),
    (["auto_awq", "--calib-dataset", "nonsense"], "unknown calibration dataset"),
    (["smooth_quant", "--calib-samples", "0"], "--calib-samples"),
])
def test_one_line_errors_and_nothing_written(capsys, tiny_folder, tmp_path, args, message, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    code, out, err = labkit(capsys, "lite", args[0], tiny_folder, "--work-dir", tmp_path / "out", *args[1:])
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_non_empty_work_dir_needs_force(capsys, tiny_folder, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    code, _, err = labkit(capsys, "lite", "rtn", tiny_folder, "--work-dir", tmp_path)
    assert code == 2 and "--force" in err and (tmp_path / "keep.txt").exists()


def test_unsupported_architecture(capsys, tiny_folder, tmp_path):
    import shutil

    other = tmp_path / "gpt2"
    shutil.copytree(tiny_folder, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    code, _, err = labkit(capsys, "lite", "rtn", other, "--work-dir", tmp_path / "out")
    assert code == 2 and "gpt2" in err and not (tmp_path / "out").exists()


def test_bits_are_limited_by_argparse(capsys, tiny_folder, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["lite", "auto_awq", str(tiny_folder), "--w-bits", "8", "--work-dir", str(tmp_path / "x")])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
