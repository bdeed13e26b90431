"""Graded checks, one module per exercise (see labkit.grading)."""
