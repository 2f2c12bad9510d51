"""The GPU scripts run here on CPU tensors, so that a Python error in them fails `make test`, not the
first minutes of a lent GPU: tests/gpu/sanitize_ops.py's and warm_triton_cache.py's calls, the GPU
benchmark's layout cases, and scripts/gpu_check.sh's argument handling, plan (its time budgets must
fit the 8 minutes), step reports and compute-sanitizer search.
"""
import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest
import torch

from helpers import assert_matches_reference
from sgg_kernels.bench.cases import GPU_LAYOUT_SIZES, ChunkHalves, make_case, make_inputs, sizes
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


def test_warm_triton_cache_calls_run_on_cpu_and_match_the_reference():
    warm = load_script("warm_triton_cache")
    specs = warm.guidance_specs()
    assert {s[1] for s in specs} >= {"contiguous", "chunk", "transpose"} and len(specs) >= 300
    for spec in specs[::7]:  # a spread of dtypes, layouts and operand sets; all of them run in one GPU step
        out, args = warm.guidance_call(spec, "cpu")
        assert_matches_reference(out, *args)
    for spec in warm.loss_specs():
        warm.loss_call(spec, "cpu")


def test_warm_triton_cache_command_line_refuses_no_jobs():
    run = subprocess.run([sys.executable, "tests/gpu/warm_triton_cache.py", "--device", "cpu", "--jobs", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert run.returncode == 2 and "--jobs must be at least 1, got 0" in run.stderr


def gpu_check(*args, env=None):
    return subprocess.run(["bash", str(GPU_CHECK), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=env)


def test_gpu_check_dry_run_plan_fits_eight_minutes():
    run = gpu_check("--dry-run")
    assert run.returncode == 0, run.stderr
    steps = re.findall(r"^step (\S+) +(\d+|rest) s? *proves: (.+)$", run.stdout, re.M)
    names = [name for name, _, _ in steps]
    assert names[:2] == ["build", "warm-triton"] and names[-1] == "bench"
    assert {"tests-cuda", "tests-triton", "memcheck", "racecheck"} <= set(names)
    assert names.index("warm-triton") < min(names.index(n) for n in names if n.startswith("tests-"))
    kill_after = int(re.search(r"KILL_AFTER=(\d+)", GPU_CHECK.read_text()).group(1))
    total = int(re.search(r"of (\d+) s$", run.stdout, re.M).group(1))
    budgets = sum(int(seconds) + kill_after for _, seconds, _ in steps if seconds != "rest")
    assert f"worst case before the benchmark: {budgets} s" in run.stdout
    # The benchmark runs to `total` (plus its kill grace); start-up needs some of the rest.
    assert budgets < total and total + kill_after <= GPU_CHECK_LIMIT_S - 20
    assert all(proves.strip() for _, _, proves in steps)


@pytest.mark.parametrize("args", [("--bogus",), ("--dry-run", "extra")])
def test_gpu_check_refuses_unknown_arguments(args):
    run = gpu_check(*args)
    assert run.returncode == 2 and "gpu_check.sh: " in run.stderr and args[-1] in run.stderr


@pytest.mark.parametrize("via", ["nvcc wrapper link", "CUDA_HOME"])
def test_gpu_check_finds_compute_sanitizer_beside_the_real_nvcc(tmp_path, via):
    # A PATH that holds only a link to nvcc (as conda and module systems set up): the sanitizer is in
    # the folder of the file the link resolves to, not the link's.
    toolkit = tmp_path / "cuda" / "bin"
    toolkit.mkdir(parents=True)
    for tool in ("nvcc", "compute-sanitizer"):
        (toolkit / tool).write_text("#!/bin/sh\n")
        (toolkit / tool).chmod(0o755)
    wrappers = tmp_path / "wrappers"
    wrappers.mkdir()
    env = {"PATH": f"{wrappers}:/usr/bin:/bin", "PYTHON": "/bin/false"}
    if via == "CUDA_HOME":
        env["CUDA_HOME"] = str(tmp_path / "cuda")
    else:
        (wrappers / "nvcc").symlink_to(toolkit / "nvcc")
    run = gpu_check("--dry-run", env=env)
    assert run.returncode == 0, run.stderr
    assert f"compute-sanitizer: {toolkit / 'compute-sanitizer'}" in run.stdout


def test_gpu_check_runs_every_step_and_reports_each(tmp_path):
    # A stand-in python that says yes to everything: the steps' order, their reports and the verdict,
    # with no compute-sanitizer to be found (both sanitizer steps then fail, and so does the check).
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\nexit 0\n")
    fake_python.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(fake_python), "GPU_CHECK_OUT": str(tmp_path / "out")}
    run = gpu_check(env=env)
    assert run.returncode == 1
    plan = re.findall(r"^step (\S+) ", gpu_check("--dry-run", env=env).stdout, re.M)
    reports = re.findall(r"^== (\S+) (passed|FAILED)", run.stdout, re.M)
    assert [name for name, _ in reports] == plan + ["gpu-check"]
    assert {name for name, verdict in reports if verdict == "FAILED"} == {"memcheck", "racecheck", "gpu-check"}
    assert "NOT shown: no op on either backend has a shared-memory race" in run.stdout
    assert (tmp_path / "out" / "gpu_check.log").read_text() == run.stdout


@pytest.mark.parametrize("op", ["guide", "guided_step_", "w2s_loss"])
@pytest.mark.parametrize("label", list(GPU_LAYOUT_SIZES))
def test_gpu_benchmark_layout_cases_build_and_check_on_cpu(op, label):
    # The GPU benchmark's own cases with the device as a parameter: same inputs and checks, on CPU.
    shape = sizes("cuda", torch.bfloat16, "full")[label]
    assert shape == GPU_LAYOUT_SIZES[label] and label not in sizes("cpu", torch.bfloat16, "full")
    case = make_case(op, shape, torch.bfloat16, "cpu")
    for name in ("sgg cpu", "sgg torch", "eager chain"):
        case.check(name)
    if isinstance(shape, ChunkHalves) and op != "w2s_loss":
        i = make_inputs(shape, torch.bfloat16)
        assert i.uncond.untyped_storage().data_ptr() == i.cond.untyped_storage().data_ptr()
        assert (i.uncond.data_ptr() - i.cond.data_ptr()) % 16 == 8  # the misaligned half of the docs' table


def test_warm_triton_cache_keeps_the_layouts_of_the_tests():
    # Tensor.to would make the sliced operands contiguous, and their strided kernels would stay cold.
    warm = load_script("warm_triton_cache")
    spec = next(s for s in warm.guidance_specs() if s[1] == "slice")
    _, (x, cond, uncond, weak, _, _) = warm.guidance_call(spec, "cpu")
    assert not cond.is_contiguous() and cond.storage_offset() > 0
