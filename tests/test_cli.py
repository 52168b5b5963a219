"""The console scripts: --help answers without the deep-learning stack, and a bad input is one clear
line on stderr with exit 2 (the cases themselves are in tests/test_bad_input.py, in process)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def test_importing_the_cli_registry_and_data_does_not_import_torch():
    code = "import sys, search.cli, trainables.registry, trainables.data; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


@pytest.mark.parametrize("command", ["tune-run", "tune-export", "tune-train", "tune-ablate", "tune-report", "tune-ui"])
def test_every_command_has_help(command):
    proc = subprocess.run([os.path.join(BIN, command), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "usage:" in proc.stdout


def test_the_console_script_answers_bad_input_with_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "MEDTUNE_HOME": str(tmp_path / "runs"), "MEDTUNE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([os.path.join(BIN, "tune-run"), "spaces/multitask.py", "--set", "train/epochs=two"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "train/epochs takes an integer" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not os.path.exists(tmp_path / "runs" / "ray")  # nothing was launched
