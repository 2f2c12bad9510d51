"""The ops outside this Python package: the library alone (torch.ops.load_library), a C++ program,
TorchScript, torch.export + AOTInductor with a dynamic batch, and torch.compile(dynamic=True)."""
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import sgg_kernels
from sgg_kernels.reference import guided_step_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPP_EXAMPLE = os.path.join(ROOT, "build", "cpp_example", "sgg_cpp_example")
EXPORT_SCRIPT = os.path.join(ROOT, "examples", "cpp", "export_modules.py")

# The documented script's modules and inputs (examples/cpp is not a package).
_spec = importlib.util.spec_from_file_location("export_modules", EXPORT_SCRIPT)
export_modules = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(export_modules)
inputs = export_modules.example_inputs


def expected(x, c, u, w, shared, weights, step):
    return (guided_step_reference(None, c, u, w, shared, None), guided_step_reference(x, c, u, w, weights, step))


def run_python(script, timeout=600):
    """A fresh interpreter that never imports sgg_kernels; it loads only the library."""
    preamble = f"import sys, torch\ntorch.ops.load_library({sgg_kernels.library_path()!r})\n"
    check = "\nassert 'sgg_kernels' not in sys.modules\nprint('ok')\n"
    result = subprocess.run([sys.executable, "-c", preamble + textwrap.dedent(script) + check], capture_output=True,
                            text=True, timeout=timeout, cwd="/")
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr


def test_the_library_needs_neither_python_nor_libtorch_python():
    needed = subprocess.run(["readelf", "-d", sgg_kernels.library_path()], capture_output=True, text=True,
                            check=True, timeout=60).stdout
    libraries = [line.split("[")[1].rstrip("]") for line in needed.splitlines() if "(NEEDED)" in line]
    assert any(lib.startswith("libtorch") for lib in libraries), libraries
    assert not [lib for lib in libraries if "python" in lib], libraries


def test_ops_work_in_a_process_that_only_loads_the_library():
    run_python("""
        x, c, u, w = (torch.randn(3, 5, dtype=torch.float64) for _ in range(4))
        weights, step = torch.tensor([0.5, 0.25]), torch.tensor([[1.0, -0.1]] * 3)
        want = step[:, :1] * x + step[:, 1:] * (c + 0.5 * (c - u) + 0.25 * (c - w))
        assert torch.allclose(torch.ops.sgg.guided_step(x, c, u, w, weights, step), want, atol=1e-12)
        try:
            torch.ops.sgg.guide(c, u[:, :2], None, weights)
            raise SystemExit("a bad shape was accepted")
        except RuntimeError as e:
            assert "uncond has shape [3, 2] but cond has shape [3, 5]" in str(e), e
    """)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """step.pt and guided.pt2, written by examples/cpp/export_modules.py as a user runs it."""
    out = tmp_path_factory.mktemp("exported")
    result = subprocess.run([sys.executable, EXPORT_SCRIPT, str(out)], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stdout + result.stderr
    return str(out / "step.pt"), str(out / "guided.pt2")


@pytest.fixture(scope="module")
def aoti_package(exported):
    return exported[1]


@pytest.mark.slow
def test_exported_aoti_package_runs_any_batch_in_a_process_that_only_loads_the_library(aoti_package):
    run_python(_standalone_helpers() + textwrap.dedent(f"""
        model = torch._inductor.aoti_load_package({aoti_package!r})
        for batch in (1, 2, 5):
            args = inputs(batch, seed=batch)
            guide, step, in_place = model(*args)
            want_guide, want_step = expected(*args)
            assert torch.allclose(guide.double(), want_guide, atol=1e-5), batch
            assert torch.allclose(step.double(), want_step, atol=1e-5), batch
            assert torch.equal(in_place, step), batch
    """))


def _standalone_helpers():
    """inputs() and expected() as source, with the reference inlined (the fresh process imports no sgg_kernels)."""
    return textwrap.dedent("""
        def inputs(batch, seed=0):
            g = torch.Generator().manual_seed(seed)
            x, c, u, w = (torch.randn(batch, 4, 8, 8, generator=g) for _ in range(4))
            return x, c, u, w, torch.tensor([0.5, 0.25]), torch.rand(batch, 2, generator=g), torch.rand(batch, 2, generator=g)

        def expected(x, c, u, w, shared, weights, step):
            col = lambda t, k: t[..., k].double().reshape(-1, 1, 1, 1) if t.dim() == 2 else t[k].double()
            c, u, w = c.double(), u.double(), w.double()
            guide = lambda k: c + col(k, 0) * (c - u) + col(k, 1) * (c - w)
            return guide(shared), col(step, 0) * x.double() + col(step, 1) * guide(weights)
    """)


@pytest.mark.slow
def test_cpp_program_calls_the_ops_directly_through_torchscript_and_through_aoti(exported):
    assert os.path.exists(CPP_EXAMPLE), f"{CPP_EXAMPLE} is not built: run `make cpp-example`"
    scripted, aoti_package = exported
    result = subprocess.run([CPP_EXAMPLE, *sgg_kernels.library_paths(), "--torchscript", scripted, "--aoti", aoti_package],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("sgg::guided_step:", "guided_step with noise", "guided_step_ (in place)", "bad weights refused",
                 "TorchScript module",
                 "AOTInductor package, guided_step, B=5", "all ok"):
        assert line in result.stdout, result.stdout


def test_cpp_program_refuses_a_missing_library_and_another_signature_without_aborting(tmp_path):
    assert os.path.exists(CPP_EXAMPLE), f"{CPP_EXAMPLE} is not built: run `make cpp-example`"
    for library, problem in (("", "no LIBRARY given"), (str(tmp_path / "nowhere.so"), "is not a file")):
        result = subprocess.run([CPP_EXAMPLE, library], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and problem in result.stderr and "usage:" in result.stderr, result.stderr

    class SevenInputs(torch.nn.Module):  # the AOTInductor signature, given as a TorchScript module
        def forward(self, x, cond, uncond, weak, shared, weights, step):
            return torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step)

    scripted = str(tmp_path / "seven.pt")
    torch.jit.script(SevenInputs()).save(scripted)
    result = subprocess.run([CPP_EXAMPLE, *sgg_kernels.library_paths(), "--torchscript", scripted],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr  # a failed check, not an abort (-6)
    assert "ok   sgg::guided_step:" in result.stdout and "FAIL TorchScript module" in result.stdout, result.stdout
    assert "export_modules.py" in result.stdout, result.stdout


def test_compile_with_an_unbacked_batch_makes_one_graph():
    # dynamic=True alone still gives batch 1 its own graph (torch specializes sizes 0 and 1), and batch 2
    # too, as [2, 2] per-sample weights duck-size the batch to the column count. An unbacked batch
    # dimension avoids both; the library's size checks then become run-time assertions.
    from torch._dynamo.testing import CompileCounterWithBackend

    def sampler_step(x, cond, uncond, weak, weights, step):
        torch.ops.sgg.guided_step_(x, cond, uncond, weak, weights, step)
        return torch.ops.sgg.guide(cond, uncond, weak, weights)

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(sampler_step, backend=counter, dynamic=True, fullgraph=True)
    for batch in (1, 2, 3, 5):
        x, c, u, w, _, weights, step = inputs(batch, seed=batch)
        for t in (x, c, u, w, weights, step):
            torch._dynamo.decorators.mark_unbacked(t, 0)
        want_guide, want_x = expected(x, c, u, w, weights, weights, step)
        got_guide = compiled(x, c, u, w, weights, step)
        torch.testing.assert_close(got_guide.double(), want_guide, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x.double(), want_x, rtol=1e-5, atol=1e-5)
    assert counter.frame_count == 1, f"{counter.frame_count} graphs for batches 1, 2, 3, 5"
