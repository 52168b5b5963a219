"""Where a trial trains, reported with its metrics and tagged on its MLflow run: the same config and seed may
train to other values on another CPU or GPU, so a figure carries the machine it came from."""
from __future__ import annotations

import platform

import torch

from trainables.registry import MACHINE_PREFIX


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, str]:
    """This machine under MACHINE_PREFIX keys: host, CPU model, the vector instructions torch picks its CPU
    kernels by, torch's version and, on a GPU, its name and the CUDA version."""
    info = {"host": platform.node(), "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__}
    if device.type == "cuda":
        info |= {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda or ""}
    return {MACHINE_PREFIX + key: value for key, value in info.items()}
