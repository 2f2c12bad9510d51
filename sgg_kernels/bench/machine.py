"""Which machine a run came from, and the kind its baseline is stored under.

Ratios between providers move with the processor (vector width, cache sizes, memory channels), so a
baseline applies only to the same device model with the same number of cores: the CPU brand string
and the logical CPU count, or the CUDA device name and its multiprocessor count (a MIG slice has fewer).
"""
from __future__ import annotations

import os
import platform
import re
import time

import torch

from .timing import METHOD, can_keep_freed_memory


def cpu_brand() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) Processor"), else the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_model(device: str) -> tuple[str, int, str]:
    """(model name, core count, what the count counts) of the device that runs the benchmarks."""
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        return props.name, props.multi_processor_count, "SMs"
    return cpu_brand(), os.cpu_count() or 1, "cores"


def kind_of(device: str, model: str, cores: int, unit: str) -> str:
    """The baseline's name, e.g. cpu-amd-epyc-2cores, cuda-nvidia-h200-132sms."""
    return f"{device}-" + re.sub(r"[^a-z0-9]+", "-", f"{model} {cores}{unit}".lower()).strip("-")


def machine(device: str, threads: int) -> dict:
    """What a result file records about the machine (and the kind its baseline is stored under)."""
    model, cores, unit = device_model(device)
    try:
        triton = __import__("triton").__version__
    except ImportError:
        triton = "not installed"
    return dict(kind=kind_of(device, model, cores, unit), device=device, model=model, cores=cores, unit=unit,
                threads=threads, torch=torch.__version__, triton=triton,
                method=METHOD, malloc="freed memory kept" if can_keep_freed_memory() else "system default",
                timestamp=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def method_of(info: dict) -> int:
    """The timing method a result file was measured with (timing.METHOD; files before it are method 1)."""
    return info.get("method", 1)


def describe(info: dict) -> str:
    """One line: "AMD EPYC, 2 cores, 1 thread" or "NVIDIA H200, 132 SMs"."""
    text = f"{info['model']}, {info['cores']} {info['unit']}"
    if info["device"] == "cpu":
        text += f", {info['threads']} thread{'s' if info['threads'] > 1 else ''}"
    return text
