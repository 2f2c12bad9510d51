"""The GPU scripts run here on CPU tensors, so that a Python error in them fails `make test`, not the
first minutes of a lent GPU: tests/gpu/sanitize_ops.py's calls and scripts/gpu_check.sh's
argument handling and plan (its time budgets must fit the 8 minutes).
"""
import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest
import torch

from helpers import assert_matches_reference
from sgg_kernels.reference import w2s_loss_grads_reference, w2s_loss_reference

ROOT = pathlib.Path(__file__).resolve().parent.parent
GPU_CHECK = ROOT / "scripts" / "gpu_check.sh"
GPU_CHECK_LIMIT_S = 8 * 60
TIMEOUT_S = 60


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "gpu" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sanitize_ops_calls_run_on_cpu_and_match_the_reference():
    results = load_script("sanitize_ops").run_all("cpu")
    (guidance, (losses, grad_v, grad_mid, (v, u, weak, mid, coefs))), = results.values()
    assert len(guidance) == 8
    for label, out, args in guidance:
        try:
            assert_matches_reference(out, *args)
        except AssertionError as e:
            raise AssertionError(f"{label}: {e}") from None
    torch.testing.assert_close(losses, w2s_loss_reference(v, u, weak, mid, coefs).float())
    exact_v, exact_mid = w2s_loss_grads_reference(torch.ones(3), v, u, weak, mid, coefs)
    torch.testing.assert_close(grad_v, exact_v.float())
    torch.testing.assert_close(grad_mid, exact_mid.float())


def test_sanitize_ops_gapped_operand_takes_the_strided_layout():
    # Item 4 of issue 26: the old script built this operand out of its storage's bounds and raised.
    (guidance, _), = load_script("sanitize_ops").run_all("cpu").values()
    label, _, (_, cond, uncond, _, _, _) = guidance[1]
    assert "gapped" in label and uncond.shape == cond.shape and not uncond.is_contiguous()


def test_sanitize_ops_command_line_on_cpu():
    run = subprocess.run([sys.executable, "tests/gpu/sanitize_ops.py", "--device", "cpu"], cwd=ROOT,
                         capture_output=True, text=True, timeout=TIMEOUT_S)
    assert run.returncode == 0, run.stderr
    assert "calls covering every op ran on cpu" in run.stdout
