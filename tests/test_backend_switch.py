"""The GPU backend switch: the choice lives in the operator library (so C++ callers see it too); Python's
set_backend/use_backend and $SGG_BACKEND set it; a CUDA call runs the CUDA C++ kernel or hands the
checked call to the selected Python backend."""
import os
import subprocess
import sys

import pytest
import torch

import sgg_kernels
from sgg_kernels import backends


def in_fresh_process(code, **env):
    result = subprocess.run([sys.executable, "-c", "import sgg_kernels, torch\n" + code], capture_output=True,
                            text=True, timeout=300, env={**os.environ, **env})
    return result.returncode, result.stdout.strip(), result.stderr


def test_default_is_cuda_when_built_else_triton():
    code, out, err = in_fresh_process("print(sgg_kernels.get_backend())", SGG_BACKEND="")
    assert code == 0, err
    assert out == ("cuda" if backends.cuda_built() else "triton")


def test_environment_variable_is_read_by_the_library():
    code, out, err = in_fresh_process("print(sgg_kernels.get_backend(), torch.ops.sgg._gpu_backend())",
                                      SGG_BACKEND="torch")
    assert code == 0 and out == "torch torch", err
    code, _, err = in_fresh_process("sgg_kernels.get_backend()", SGG_BACKEND="bogus")
    assert code != 0 and "SGG_BACKEND='bogus' is not an sgg backend" in err


def test_set_backend_wins_over_the_environment_and_use_backend_restores(monkeypatch):
    monkeypatch.setenv("SGG_BACKEND", "torch")
    assert sgg_kernels.get_backend() == "torch"
    with sgg_kernels.use_backend("triton"):
        assert sgg_kernels.get_backend() == torch.ops.sgg._gpu_backend() == "triton"
    assert sgg_kernels.get_backend() == "torch"
    with pytest.raises(ValueError, match="unknown sgg backend 'nope'"):
        sgg_kernels.set_backend("nope")
    assert sgg_kernels.get_backend() == "torch"


@pytest.mark.skipif(backends.cuda_built(), reason="checks the CPU-only build's refusal")
def test_cuda_backend_on_a_cpu_only_build_says_why():
    with pytest.raises(RuntimeError, match="sgg backend 'cuda' is not available"):
        sgg_kernels.set_backend("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["cuda", "triton", "torch"])
def test_a_cuda_call_runs_the_selected_backend(backend, monkeypatch):
    if backend == "cuda" and not backends.cuda_built():
        pytest.skip("the library was built without CUDA")
    calls = []
    real = backends.launcher
    monkeypatch.setattr(backends, "launcher", lambda name: calls.append(name) or real(name))
    c = torch.randn(2, 8, device="cuda")
    with sgg_kernels.use_backend(backend):
        out = torch.ops.sgg.guide(c, c * 2, None, torch.tensor([0.5, 0.0], device="cuda"))
    torch.testing.assert_close(out, c + 0.5 * (c - c * 2))
    assert calls == ([] if backend == "cuda" else [backend])  # CUDA C++ runs inside the library
