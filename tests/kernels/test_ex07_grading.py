"""The chapter 07 exercises: solutions score full marks, stubs zero, typical mistakes lose points."""
from pathlib import Path

import pytest

from labkit.grading import grade, project_root

WRONG = {
    "ex07_int4_dequant": {
        "sequential nibbles": ("return AWQ_ORDER.index(c)", "return c"),
        "no scale": ("out.append((code_to_float(q) - code_to_float(z)) * scales[c])",
                     "out.append(code_to_float(q) - code_to_float(z))"),
        "float conversion by int()": ("return float(bits.view(np.float32) - np.float32(2**23))",
                                      "return float(bits.view(np.float32))"),
    },
    "ex07_naive_gemv": {
        "sequential nibbles": ("shift = 4 * AWQ_REVERSE_ORDER[n % 8]", "shift = 4 * (n % 8)"),
        "zero point of group 0": ("z = (qzeros[g, n // 8] >> shift) & 0xF", "z = (qzeros[0, n // 8] >> shift) & 0xF"),
        "no bounds check": ("    if n < out.shape[0]:\n", "    if True:\n"),
    },
}


@pytest.mark.parametrize("exercise", sorted(WRONG))
def test_solution_full_marks_stub_zero(exercise):
    root = project_root()
    solved = grade(exercise, root / "solutions" / f"{exercise}.py")
    assert solved.score == solved.max > 0, [r.message for r in solved.results if not r.passed]
    stub = grade(exercise, root / "exercises" / f"{exercise}.py")
    assert stub.score == 0


@pytest.mark.parametrize("exercise, mistake", [(e, m) for e in sorted(WRONG) for m in WRONG[e]])
def test_typical_mistakes_lose_points(exercise, mistake, tmp_path: Path):
    source = (project_root() / "solutions" / f"{exercise}.py").read_text()
    old, new = WRONG[exercise][mistake]
    assert old in source
    wrong = tmp_path / f"{exercise}.py"
    wrong.write_text(source.replace(old, new))
    report = grade(exercise, wrong)
    assert report.score < report.max, f"{mistake}: still {report.score}/{report.max}"
