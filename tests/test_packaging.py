"""Packaging: the sdist carries every source and installs into a working package; an isolated build
and a library built against another torch stop with the fix instead of running a slow path."""
import glob
import json
import os
import subprocess
import sys
import tarfile

import pytest

import sgg_kernels
from sgg_kernels import _library

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_build_without_the_users_torch_stops_with_the_fix():
    # What pip's default build isolation gives setup.py: an environment in which torch is not importable.
    script = "import sys; sys.modules['torch'] = None; sys.argv = ['setup.py', '--version']; exec(open('setup.py').read())"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "pip install --no-build-isolation ." in result.stderr, result.stderr


def test_a_library_built_against_another_torch_is_reported_as_such(monkeypatch):
    monkeypatch.setattr(_library, "build_info", lambda: {"torch": "1.0.0", "cuda": False})
    with pytest.raises(ImportError, match=r"built against torch 1\.0\.0, but torch .* is installed; rebuild"):
        _library.load()


def test_a_missing_library_is_reported_with_the_build_command(monkeypatch, tmp_path):
    monkeypatch.setattr(_library, "_HERE", str(tmp_path))
    with pytest.raises(ImportError, match="operator library is not built .* pip install --no-build-isolation"):
        _library.load()


@pytest.mark.slow
def test_the_sdist_has_every_source_and_installs_a_working_package(tmp_path):
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    (sdist,) = glob.glob(str(tmp_path / "sgg_kernels-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        packed = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    sources = {os.path.relpath(p, ROOT) for pattern in ("csrc/**/*", "examples/**/*", "sgg_kernels/**/*.py",
                                                         "sgg_kernels/bench/baselines/*.json")
               for p in glob.glob(os.path.join(ROOT, pattern), recursive=True) if os.path.isfile(p)}
    assert not sources - packed, f"missing from the sdist: {sorted(sources - packed)}"

    # pip builds a wheel from the sdist and installs it; CPU-only, to keep CI short (the CUDA sources
    # compile in `make test`'s own build).
    site = tmp_path / "site"
    env = {**os.environ, "SGG_NO_CUDA": "1"}
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                              "--target", str(site), sdist], env=env, capture_output=True, text=True, timeout=1500)
    assert install.returncode == 0, install.stdout + install.stderr
    check = ("import sgg_kernels, torch\n"
             f"assert sgg_kernels.library_path().startswith({str(site)!r}), sgg_kernels.library_path()\n"
             "c, u = torch.randn(2, 5), torch.randn(2, 5)\n"
             "w = torch.tensor([1.5, 0.0])\n"
             "assert torch.allclose(torch.ops.sgg.guide(c, u, None, w), c + 1.5 * (c - u), atol=1e-6)\n"
             "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", check], cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": str(site)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr

    # The benchmark ships with the package: it runs from the installed copy, with its baselines.
    bench = subprocess.run([sys.executable, "-m", "sgg_kernels.bench", "--tiny", "--device", "cpu", "--op",
                            "guided_step", "--dtype", "fp32", "--json", str(tmp_path / "run.json"), "--compare"],
                           cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True,
                           text=True, timeout=600)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    assert "| op | size | dtype | provider | median ms |" in bench.stdout, bench.stdout
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["format"] == "sgg-kernels-bench/1"
    providers = {row["provider"] for row in run["rows"]}
    assert {"sgg cpu", "eager chain", "torch.compile chain", "copy (same bytes)"} <= providers, providers
    stored = subprocess.run([sys.executable, "-c", "from sgg_kernels.bench import results; "
                             "assert results.stored_kinds('cpu'), 'no baselines installed'"],
                            cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True,
                            text=True, timeout=120)
    assert stored.returncode == 0, stored.stderr
