"""Packaging: the sdist carries every source; the wheel is one cp310-abi3 wheel that needs torch 2.10 or
newer and no compiler; the installed package runs its command-line tools from any directory; an isolated
build and a missing library stop with the fix.

`make test` builds the wheel once (`pip wheel --no-build-isolation --no-deps .`, with .venv's torch
2.14.1, reusing `make build`'s objects), installs it next to torch 2.13.0 in a second venv and runs a
subset of the tests there (the Makefile's WHEEL_TESTS), test_the_installed_package_is_the_abi3_wheel
included. The sdist is checked for its contents here, and not built into a second package.
"""
import glob
import importlib.metadata
import os
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest

import sgg_kernels
from sgg_kernels import _library

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where `import sgg_kernels` finds the package under test: the source checkout, or site-packages.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(sgg_kernels.__file__)))
SOURCE_CHECKOUT = os.path.exists(os.path.join(ROOT, "setup.py"))
needs_source = pytest.mark.skipif(not SOURCE_CHECKOUT, reason="needs the source checkout (setup.py)")


@needs_source
def test_a_build_without_the_users_torch_stops_with_the_fix():
    # What pip's default build isolation gives setup.py: an environment in which torch is not importable.
    script = "import sys; sys.modules['torch'] = None; sys.argv = ['setup.py', '--version']; exec(open('setup.py').read())"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "pip install --no-build-isolation ." in result.stderr, result.stderr


def test_a_missing_library_is_reported_with_the_build_command(monkeypatch, tmp_path):
    monkeypatch.setattr(_library, "_HERE", str(tmp_path))
    with pytest.raises(ImportError, match="operator library is not built .* pip install --no-build-isolation"):
        _library.load()


@needs_source
def test_the_sdist_has_every_source_and_requires_the_floor(tmp_path):
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    (sdist,) = glob.glob(str(tmp_path / "sgg_kernels-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        packed = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        pkg_info = tar.extractfile(next(name for name in tar.getnames() if name.endswith("/PKG-INFO"))).read().decode()
    sources = {os.path.relpath(p, ROOT) for pattern in ("csrc/**/*", "examples/**/*", "sgg_kernels/**/*.py",
                                                         "sgg_kernels/bench/baselines/*.json")
               for p in glob.glob(os.path.join(ROOT, pattern), recursive=True) if os.path.isfile(p)}
    sources |= {"setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "requirements-dev.txt", "Makefile"}
    assert not sources - packed, f"missing from the sdist: {sorted(sources - packed)}"
    built = sorted(name for name in packed if name.endswith((".so", ".o")) or name.endswith("_build_info.json"))
    assert not built, f"build outputs in the sdist: {built}"
    assert "Requires-Dist: torch>=2.10" in pkg_info.splitlines(), pkg_info


def installed_wheel():
    """(the installed distribution, its WHEEL file's text) when `import sgg_kernels` is an installed wheel,
    else None (a source checkout: `make build` or a .pth file)."""
    try:
        dist = importlib.metadata.distribution("sgg_kernels")
    except importlib.metadata.PackageNotFoundError:
        return None
    wheel = dist.read_text("WHEEL")
    here = os.path.realpath(str(dist.locate_file("sgg_kernels/__init__.py")))
    if wheel is None or here != os.path.realpath(sgg_kernels.__file__):
        return None
    return dist, wheel


def test_the_installed_package_is_the_abi3_wheel():
    found = installed_wheel()
    if found is None:
        pytest.skip(f"sgg_kernels is not an installed wheel here ({sgg_kernels.__file__}); `make test-wheel` runs this")
    dist, wheel = found
    assert re.search(r"^Tag: cp310-abi3-linux_\w+$", wheel, re.M), wheel
    assert re.search(r"^Root-Is-Purelib: false$", wheel, re.M), wheel
    requires = [r for r in dist.requires or [] if "extra ==" not in r]
    assert sorted(requires) == ["numpy", "torch>=2.10", "tqdm"], dist.requires
    files = {str(f) for f in dist.files}
    shipped = {"sgg_kernels/_C.abi3.so", "sgg_kernels/_build_info.json", "sgg_kernels/bench/__main__.py",
               "sgg_kernels/generate.py"}
    assert shipped <= files, sorted(shipped - files)
    assert [f for f in files if f.startswith("sgg_kernels/bench/baselines/") and f.endswith(".json")], sorted(files)
    info = _library.build_info()
    assert info["floor"] == "2.10"
    assert ("sgg_kernels/_C_cuda.abi3.so" in files) == bool(info["cuda"]), (info, sorted(files))
    # What is loaded is the wheel's library, not a build lying elsewhere on the path.
    assert os.path.realpath(_library.library_path()) == os.path.realpath(str(dist.locate_file("sgg_kernels/_C.abi3.so")))


def test_one_generate_batch_runs_from_outside_the_source_tree(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "sgg_kernels.generate", "--model", "toy-random", "--seeds", "0-3",
                             "--batch-size", "4", "--steps", "3", "--schedule", "sgg:3,2,0.5", "--threads", "1",
                             "--out", str(out)], cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(list((out / "parts").glob("seeds-*.npz"))) == 1  # one batch of 4 seeds
    with np.load(out / "samples.npz") as samples:
        assert samples["seeds"].tolist() == [0, 1, 2, 3]
        assert samples["arr_0"].shape[0] == 4 and np.isfinite(samples["arr_0"]).all()
        assert samples["arr_1"].shape == (4,)
