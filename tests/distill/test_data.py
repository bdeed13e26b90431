"""The teacher's generated data on a tiny random teacher: continuations of calibration-text
openings (never of the evaluation text), one seed per sample, and the work dir's cache."""
import json

import pytest

from labkit.distill.data import openings, teacher_answers, teacher_continuations
from labkit.distill.pipeline import DataConfig, training_sequences
from labkit.texts import calibration_text, eval_text


@pytest.fixture(scope="module")
def teacher(pair):
    """(spec, model, tokenizer) of the tiny teacher on the CPU."""
    from labkit.loading import load_model

    model, tokenizer = load_model(pair[0])
    return pair[0], model, tokenizer


@pytest.fixture(scope="module")
def broad_teacher(tmp_path_factory):
    """A tiny teacher whose next-token distributions are broad (the final norm scaled down): the
    sharp fixture teacher falls into the same one-token loop whatever the seed."""
    import torch

    from labkit.loading import load_model

    from .conftest import save_folder, tiny_model

    model = tiny_model(0, vocab_size=49152, num_hidden_layers=4)
    with torch.no_grad():
        model.model.norm.weight.mul_(0.05)
    spec = save_folder(model, tmp_path_factory.mktemp("broad") / "teacher")
    return (spec, *load_model(spec))


def _engine_must_not_run(monkeypatch):
    import labkit.engine.llm

    def refuse(*args, **kwargs):
        raise AssertionError("the engine ran: the cached data were generated again")

    monkeypatch.setattr(labkit.engine.llm, "LLM", refuse)


def test_openings_are_spread_over_the_calibration_text(teacher):
    _, _, tok = teacher
    text = calibration_text()
    found = openings(tok, text, 40)
    assert len(found) == 40 and all(len(o) == 32 for o in found)
    assert len({tuple(o) for o in found}) == 40
    places = [text.index(tok.decode(o)) for o in found]
    assert places == sorted(places) and places[-1] > 0.9 * len(text) - 300, "not spread to the text's end"
    many = openings(tok, text, 10_000)   # more than the text has words: each used about as often
    assert len({tuple(o) for o in many}) > 2000


def test_continuations_come_from_the_calibration_text_not_the_evaluation_text(teacher, tmp_path):
    spec, model, tok = teacher
    data = DataConfig(kind="teacher", prompts=2, max_new_tokens=4, continuations=3)
    sequences = training_sequences(model, tok, spec, data, tmp_path, seed=0, show_progress=False)
    assert len(sequences) == 2 + 3
    for seq in sequences[2:]:
        opening = tok.decode(seq[:32])
        assert opening in calibration_text() and opening not in eval_text()
        assert len(seq) > 32, "the teacher added nothing"
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("*.json")) == ["continuations", "teacher"]
    # --data text has no teacher data, continuations included
    assert training_sequences(model, tok, spec, DataConfig(kind="text"), tmp_path / "t", 0, False) == \
        [tok.encode(p) for p in calibration_text().split("\n\n") if p.strip()]


def test_each_sample_has_its_own_seed_and_a_seed_gives_the_same_sample(broad_teacher, tmp_path):
    spec, model, tok = broad_teacher
    start = openings(tok, calibration_text(), 1)
    args = (model, tok, spec, start * 4)
    samples = teacher_continuations(*args, tmp_path / "a", max_tokens=24, show_progress=False)
    assert all(s[:32] == start[0] for s in samples)
    assert len({tuple(s[32:]) for s in samples}) == 4, "two samples of one opening are the same"
    assert teacher_continuations(*args, tmp_path / "b", max_tokens=24, show_progress=False) == samples
    shifted = teacher_continuations(*args, tmp_path / "c", max_tokens=24, seed=1, show_progress=False)
    assert shifted[:3] == samples[1:], "sample i is seeded by seed + i"


def test_a_second_run_reads_the_cache_and_does_not_run_the_engine(teacher, tmp_path, monkeypatch):
    spec, model, tok = teacher
    start = openings(tok, calibration_text(), 3)
    continued = teacher_continuations(model, tok, spec, start, tmp_path, max_tokens=6, show_progress=False)
    answered = teacher_answers(model, tok, spec, ["Name a colour.", "Count to three."], tmp_path, max_tokens=6,
                               show_progress=False)
    files = {p: p.read_bytes() for p in tmp_path.glob("*.json")}
    assert len(files) == 2
    stored = json.loads(next(p for p in files if p.name.startswith("continuations")).read_text())
    assert stored["settings"] == {"max_tokens": 6, "temperature": 1.0, "top_p": 1.0, "seed": 0}
    _engine_must_not_run(monkeypatch)
    assert teacher_continuations(model, tok, spec, start, tmp_path, max_tokens=6, show_progress=False) == continued
    assert teacher_answers(model, tok, spec, ["Name a colour.", "Count to three."], tmp_path, max_tokens=6,
                           show_progress=False) == answered
    assert {p: p.read_bytes() for p in tmp_path.glob("*.json")} == files
    with pytest.raises(AssertionError, match="the engine ran"):   # other openings: not in the cache
        teacher_continuations(model, tok, spec, start[:2], tmp_path, max_tokens=6, show_progress=False)
    with pytest.raises(AssertionError, match="the engine ran"):   # other settings: not in the cache
        teacher_continuations(model, tok, spec, start, tmp_path, max_tokens=6, seed=5, show_progress=False)
