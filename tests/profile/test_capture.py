"""capture_stderr: native writes to fd 2, Python's sys.stderr and child processes, all kept."""
import os
import subprocess
import sys

import pytest

from labkit.profile.capture import capture_stderr


def test_captures_fd_2_python_and_children(capfd):
    with capture_stderr() as log:
        os.write(2, b"native line\n")                       # what C++ code does
        print("python line", file=sys.stderr)
        subprocess.run([sys.executable, "-c", "import os; os.write(2, b'child line\\n')"], check=True)
        assert log.text == ""                                # filled in when the block ends
    assert {"native line", "python line", "child line"} <= set(log.text.splitlines())
    assert capfd.readouterr().err == ""                      # nothing reached the real stderr

    os.write(2, b"after\n")                                  # fd 2 is back where it was
    assert capfd.readouterr().err == "after\n"


def test_restores_fd_2_when_the_block_raises(capfd):
    before = os.fstat(2)
    with pytest.raises(ValueError, match="boom"):
        with capture_stderr() as log:
            os.write(2, b"partial\n")
            raise ValueError("boom")
    assert log.text == "partial\n"
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    os.write(2, b"still works\n")
    assert capfd.readouterr().err == "still works\n"
