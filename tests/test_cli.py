"""The CLI answers --help without the deep-learning stack, and bad input is one clear line."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
SPACE = os.path.join(ROOT, "spaces", "multitask.py")


def test_importing_the_cli_and_registry_does_not_import_torch():
    code = "import sys, search.cli, trainables.registry, trainables.data; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


@pytest.mark.parametrize("command", ["tune-run", "tune-export", "tune-train", "tune-ui"])
def test_every_command_has_help(command):
    proc = subprocess.run([os.path.join(BIN, command), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "usage:" in proc.stdout


@pytest.mark.parametrize("args, needle", [
    (["spaces/absent.py"], "'spaces/absent.py' does not exist"),
    ([SPACE, "--set", "optim/lrr=1"], "Unknown config key 'optim/lrr'"),
    ([SPACE, "--set", "train/epochs=two"], "train/epochs takes an integer"),
    ([SPACE, "--name", "never-ran", "--resume"], "no experiment named 'never-ran'"),
    ([SPACE, "--data", "/no/such/data"], "'/no/such/data' does not exist"),
    ([SPACE, "--scheduler", "pbt2"], "Unknown scheduler 'pbt2'"),
])
def test_bad_input_is_one_clear_error_before_any_trial(tmp_path, args, needle):
    env = {**os.environ, "MEDTUNE_HOME": str(tmp_path / "runs"), "MEDTUNE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([os.path.join(BIN, "tune-run"), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "runs" / "ray")  # nothing was launched
