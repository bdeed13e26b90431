"""Exercises 03a/03b/03c (distillation losses): solutions score full marks, stubs zero, typical mistakes lose points."""
import pytest

EXERCISES = ["ex03_kd_loss", "ex03_reverse_kl", "ex03_jsd"]


@pytest.mark.parametrize("exercise", EXERCISES)
def test_solution_full_marks_and_stub_zero(exercise, g):
    report = g.solution(exercise)
    assert report.score == report.max > 0, g.failed(report)
    stub = g.stub(exercise)
    assert stub.score == 0 and all(r.message == "not implemented yet" for r in stub.results)


KD_SOFTMAX = ("    log_q = torch.log_softmax(student_logits.float() / temperature, dim=-1)   # stable: subtracts the max\n"
              "    log_p = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)")
RKL_SOFTMAX = ("    log_q = torch.log_softmax(student_logits.float() / temperature, dim=-1)\n"
               "    log_p = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)")


@pytest.mark.parametrize("exercise, old, new, check, hint", [
    # no T^2
    ("ex03_kd_loss", "return temperature**2 * kl.mean()", "return kl.mean()", "t_squared_factor", "multiply by T**2"),
    # the KL direction reversed
    ("ex03_kd_loss", "kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)", "kl = (log_q.exp() * (log_q - log_p)).sum(dim=-1)",
     "matches_the_definition", "reverse direction"),
    # log-probabilities and probabilities swapped
    ("ex03_kd_loss", "kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)", "kl = (log_p * (log_p.exp() - log_q.exp())).sum(dim=-1)",
     "matches_the_definition", "log_softmax"),
    # softmax over the position axis
    ("ex03_kd_loss", KD_SOFTMAX, KD_SOFTMAX.replace("dim=-1", "dim=0"), "softmax_over_the_vocabulary", "last axis"),
    # no stabilization: exp / sum, then log
    ("ex03_kd_loss", KD_SOFTMAX,
     "    e_q, e_p = (student_logits.float() / temperature).exp(), (teacher_logits.float() / temperature).exp()\n"
     "    log_q, log_p = (e_q / e_q.sum(-1, keepdim=True)).log(), (e_p / e_p.sum(-1, keepdim=True)).log()",
     "stable_for_large_logits_and_low_temperature", "log_softmax"),
    # in place on the caller's logits
    ("ex03_kd_loss", KD_SOFTMAX,
     "    student_logits /= temperature\n    teacher_logits /= temperature\n"
     "    log_q = torch.log_softmax(student_logits.float(), dim=-1)\n    log_p = torch.log_softmax(teacher_logits.float(), dim=-1)",
     "boundaries_and_inputs_unchanged", "changed its inputs"),
    # reverse KL computed in the forward direction
    ("ex03_reverse_kl", "kl = (log_q.exp() * (log_q - log_p)).sum(dim=-1)", "kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)",
     "matches_the_definition", "forward direction"),
    ("ex03_reverse_kl", "return temperature**2 * kl.mean()", "return kl.mean()", "t_squared_factor", "multiply by T**2"),
    ("ex03_reverse_kl", RKL_SOFTMAX, RKL_SOFTMAX.replace("dim=-1", "dim=1"), "softmax_over_the_vocabulary", "axis 1"),
    ("ex03_reverse_kl", RKL_SOFTMAX,
     "    log_q = torch.softmax(student_logits.float() / temperature, dim=-1).log()\n"
     "    log_p = torch.softmax(teacher_logits.float() / temperature, dim=-1).log()",
     "stable_for_large_logits_and_low_temperature", "overflowed"),
    # JSD: the mixture taken in log space
    ("ex03_jsd", "log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1 - beta))",
     "log_m = beta * log_p + (1 - beta) * log_q", "matches_the_definition", "not the log-probabilities"),
    # JSD: beta on the wrong side
    ("ex03_jsd", "log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1 - beta))",
     "log_m = torch.logaddexp(log_p + math.log(1 - beta), log_q + math.log(beta))", "matches_the_definition",
     "m = beta * p"),
    # JSD: probabilities mixed directly, logs of zeros
    ("ex03_jsd", "log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1 - beta))\n"
     "    kl_pm = (log_p.exp() * (log_p - log_m)).sum(dim=-1)\n    kl_qm = (log_q.exp() * (log_q - log_m)).sum(dim=-1)",
     "p, q = log_p.exp(), log_q.exp()\n    m = beta * p + (1 - beta) * q\n"
     "    kl_pm = (p * (p / m).log()).sum(dim=-1)\n    kl_qm = (q * (q / m).log()).sum(dim=-1)",
     "stable_for_large_logits", "logaddexp"),
    # JSD: summed over positions instead of averaged
    ("ex03_jsd", "return (beta * kl_pm + (1 - beta) * kl_qm).mean()", "return (beta * kl_pm + (1 - beta) * kl_qm).sum()",
     "matches_the_definition", "want"),
])
def test_typical_mistakes_lose_points(tmp_path, exercise, old, new, check, hint, g):
    report = g.variant(exercise, tmp_path, old, new)
    failed = g.failed(report)
    assert check in failed, f"{check} should fail; failed: {failed}"
    assert report.score < report.max
    assert hint in failed[check], failed[check]
