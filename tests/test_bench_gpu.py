"""The GPU-path benchmark (scripts/bench_gpu.py): its smoke run on CPU prints its table, and without a CUDA
device it refuses in one line with exit code 2."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts import bench_gpu

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # three processes import torch (about 20 s)
def test_the_cpu_smoke_run_prints_a_row_of_images_per_second_for_each_number_of_trials():
    run = subprocess.run([sys.executable, "scripts/bench_gpu.py", "--device", "cpu", "--backbone", "test_resnet",
                          "--image-size", "32", "--batch", "4", "--warmup", "3", "--steps", "3", "--trials", "1,2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    head, columns, *rows = run.stdout.strip().splitlines()
    assert head.startswith("classification test_resnet, 32 px, 1 channel(s), batch 4, bf16 off, channels_last off, "
                           "compile off; CPU, 1 thread(s) a trial; 3 warm-up + 3 timed steps per trial; load average ")
    assert columns.split("  ")[:2] == ["trials", "images/s per trial (median step)"]
    assert [row.split()[0] for row in rows] == ["1", "2"]
    for n, row in zip((1, 2), rows):
        per_trial, rest = re.fullmatch(r"\d+\s+([\d.]+(?: / [\d.]+)*)\s+(.*)", row).groups()
        rates = [float(r) for r in per_trial.split(" / ")]
        mean, total, wall, versus, peak = (float(v) for v in rest.split())
        assert len(rates) == n and min(rates) > 0
        assert total == pytest.approx(sum(rates), abs=0.2) and mean == pytest.approx(total / n, abs=0.2)
        assert wall > 0 and peak > 0
    assert rows[0].split()[-2] == "1.00"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
def test_without_a_cuda_device_it_says_so_in_one_line_and_exits_with_code_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench_gpu.main([])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err and "--device cpu" in err
