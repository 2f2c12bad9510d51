"""Builds the sgg operator library, sgg_kernels/_C.abi3.so: the CPU kernels always, the CUDA kernels when
torch is a CUDA build and nvcc exists. It links libtorch only (no libpython, no libtorch_python), so
C++ programs load it too; Python loads it with torch.ops.load_library (sgg_kernels/_library.py).

    pip install --no-build-isolation .        # builds against the torch already installed

CUDA targets sm_90 (Hopper) plus what TORCH_CUDA_ARCH_LIST asks for, e.g. TORCH_CUDA_ARCH_LIST="8.0 10.0+PTX".
"""
import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time

from setuptools import find_packages, setup

try:
    import torch
except ImportError:
    # pip's default build isolation gives setup.py a fresh environment without the user's torch; a
    # library built against another torch would not load. Stop with the fix instead.
    sys.exit("sgg_kernels compiles against the torch it will run with, and none is importable here (pip's build "
             "isolation hides it). Install torch first, then: pip install --no-build-isolation .")

HERE = os.path.dirname(os.path.abspath(__file__))


def find_cuda_home():
    """(the CUDA toolkit root, how it was found): $CUDA_HOME, else where the nvcc on PATH really lives,
    else /usr/local/cuda; (None, None) when there is none.

    torch guesses dirname(dirname(which nvcc)), which is wrong when `nvcc` is a wrapper script (here
    /usr/local/bin/nvcc execs /usr/local/cuda-13.0/bin/nvcc); nvcc's dry run names its own bin dir.
    """
    def is_toolkit(root):
        return bool(root) and os.path.isfile(os.path.join(root, "bin", "nvcc")) and \
            os.path.isfile(os.path.join(root, "include", "cuda_runtime.h"))

    env = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if is_toolkit(env):
        return env, f"CUDA_HOME (or CUDA_PATH) is {env}"
    nvcc = shutil.which("nvcc")
    if nvcc:
        try:
            dry = subprocess.run([nvcc, "--dryrun", "-E", "-x", "cu", os.devnull], capture_output=True, text=True,
                                 timeout=60).stderr
            bin_dir = re.search(r"^#\$ _HERE_=(.+)$", dry, re.M)
            if bin_dir and is_toolkit(os.path.dirname(bin_dir.group(1).strip())):
                return os.path.dirname(bin_dir.group(1).strip()), f"nvcc was found on PATH at {nvcc}"
        except (OSError, subprocess.SubprocessError):
            pass
        if is_toolkit(os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))):
            return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), f"nvcc was found on PATH at {nvcc}"
    if is_toolkit("/usr/local/cuda"):
        return "/usr/local/cuda", "a CUDA toolkit is installed in /usr/local/cuda"
    return None, None


def cuda_build_plan():
    """(CUDA_HOME, why the CUDA kernels are built) or (None, why not)."""
    if torch.version.cuda is None:
        return None, f"torch {torch.__version__} is not a CUDA build"
    if os.environ.get("SGG_NO_CUDA") == "1":
        return None, "SGG_NO_CUDA=1"
    home, how = find_cuda_home()
    if home is None:
        return None, "nvcc was not found (set CUDA_HOME to the CUDA toolkit root)"
    return home, f"torch {torch.__version__} is a CUDA build and {how}"


# What the build says before it starts, shown by `make build` and by `pip install -v` (plain pip shows
# only "still running..."). Measured from scratch on the project's 2-core CPU VM on the stable-ABI
# headers (much lighter than ATen's): 51 s with CUDA in a fresh-clone CI run, 48 s CPU-only (load 1 to
# 2), and 154 s with CUDA while other jobs loaded the machine (load 2 to 5).
CUDA_HOME, BUILD_REASON = cuda_build_plan()
if CUDA_HOME:
    # torch.utils.cpp_extension reads CUDA_HOME when it is imported.
    os.environ["CUDA_HOME"] = CUDA_HOME
    print(f"sgg_kernels: compiling the CPU and the CUDA kernels, because {BUILD_REASON} (toolkit: {CUDA_HOME}).\n"
          "sgg_kernels: about 1 minute on 2 idle cores, a few minutes on a busy machine; to "
          "build the CPU kernels only, set SGG_NO_CUDA=1 (on GPUs the ops then run their Triton kernels).", flush=True)
else:
    print(f"sgg_kernels: compiling the CPU kernels only ({BUILD_REASON}); on GPUs the ops run their Triton "
          "kernels. About 1 minute on 2 idle cores.", flush=True)

from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def sources(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, "csrc", pattern), recursive=True))


# The dense CPU kernel is compiled once per SIMD level and chosen at run time
# (csrc/cpu/guidance_cpu.cpp), so one wheel runs everywhere and uses AVX-512 where it exists.
SIMD_SOURCES = {
    "csrc/cpu/kernels_avx2.cpp": ["-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2", "-mlzcnt", "-mpopcnt"],
    # -Wno-maybe-uninitialized: GCC 12 flags the `__Y = __Y` idiom of its own avx512fintrin.h each time
    # _mm512_cvtph_ps is inlined (csrc/cpu/vec_lanes.h; none of the warnings is about our code).
    "csrc/cpu/kernels_avx512.cpp": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma",
                                     "-mf16c", "-mbmi", "-mbmi2", "-mlzcnt", "-mpopcnt", "-Wno-maybe-uninitialized"],
}


def cuda_arch_flags():
    """-gencode flags: sm_90 (with PTX, for newer GPUs) plus each TORCH_CUDA_ARCH_LIST entry."""
    flags = ["-gencode=arch=compute_90,code=[sm_90,compute_90]"]
    for arch in re.split(r"[;\s]+", os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()):
        match = re.fullmatch(r"(\d+)\.(\d+)([af]?)(\+PTX)?", arch)
        if not match:
            if arch:
                print(f"sgg_kernels: ignoring TORCH_CUDA_ARCH_LIST entry {arch!r} (expected e.g. 8.0 or 9.0+PTX)")
            continue
        num = match.group(1) + match.group(2) + match.group(3)
        code = f"[sm_{num},compute_{num}]" if match.group(4) else f"sm_{num}"
        flag = f"-gencode=arch=compute_{num},code={code}"
        if num != "90" and flag not in flags:
            flags.append(flag)
    return flags


def pip_nvidia_include_dirs():
    """Headers of pip's nvidia-* packages (e.g. nvidia/cu13/include/cusparse.h, which ATen's CUDA headers
    include and a minimal toolkit lacks). Searched after the toolkit's own include dir."""
    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations) if spec and spec.submodule_search_locations else []
    return sorted(d for root in roots for d in glob.glob(os.path.join(root, "*", "include")))


def system_includes(tool):
    """torch's headers as system headers, so the build shows only our own warnings (ATen's AVX-512
    headers alone gave ~400 under -Wall). GCC and nvcc ignore a -I for a dir also given with -isystem."""
    from torch.utils.cpp_extension import include_paths
    dirs = include_paths("cuda" if CUDA_HOME else "cpu")
    if tool == "nvcc":
        return [f for d in dirs for f in ("-isystem", d)]
    return [f"-isystem{d}" for d in dirs]


# The stable-ABI floor: the oldest torch whose stable C shims the libraries may call. 2.10 is where
# torch_parallel_for, versioned kernel registration (torch_library_impl) and std::string/int[] operands
# first exist; the headers refuse any call newer than this, so the binary loads on 2.10 and later.
TORCH_FLOOR = (2, 10)
TORCH_TARGET_VERSION = f"0x{TORCH_FLOOR[0]:02X}{TORCH_FLOOR[1]:02X}000000000000"  # major, minor: one byte each


def extensions():
    """The core library (schemas, checks, CPU kernels) and, when CUDA is built, the CUDA library, which
    links the core one (its kernels read the core's backend setting)."""
    # -ffp-contract=off: GCC would fuse the SIMD mul+add into FMA, so the AVX builds, the scalar tail
    # and the strided walk would round differently; unfused, every path agrees bit for bit.
    # -Wno-psabi: GCC's note that passing 32-byte vectors by value changed ABI in GCC 4.6 (the kernels
    # are internal; nothing outside calls them with vector arguments).
    stable = [f"-DTORCH_TARGET_VERSION={TORCH_TARGET_VERSION}"]
    cxx = ["-O3", "-std=c++20", "-ffp-contract=off", "-Wno-unknown-pragmas", "-Wno-psabi", *stable,
           *system_includes("cxx")]
    core_sources = [s for s in sources("*.cpp") + sources("cpu/*.cpp") if s not in SIMD_SOURCES]
    # py_limited_api: no libtorch_python and no Python symbols, so the library loads in plain C++.
    core = CppExtension("sgg_kernels._C", core_sources, extra_compile_args={"cxx": cxx}, py_limited_api=True)
    if not CUDA_HOME:
        return [core]
    # --fmad=false for the same reason: the CUDA kernels then round exactly as the CPU ones.
    nvcc = ["-O3", "-lineinfo", "--fmad=false", "-std=c++20", *stable, *cuda_arch_flags(), *system_includes("nvcc")]
    cuda = CUDAExtension(
        "sgg_kernels._C_cuda",
        # csrc/cuda/checks_copy.cpp compiles the checks in again: only the C functions of
        # runtime_settings.h cross between the libraries.
        sources("cuda/*.cpp") + sources("cuda/*.cu"),
        define_macros=[("USE_CUDA", None)],  # the stable ABI declares its CUDA shims under USE_CUDA
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        # The core library sits next to this one; $ORIGIN finds it wherever the package is installed.
        extra_link_args=["-Wl,-rpath,$ORIGIN", "-l:_C.abi3.so"],
        py_limited_api=True,
    )
    cuda.include_dirs += [d for d in pip_nvidia_include_dirs() if d not in cuda.include_dirs]
    return [core, cuda]


class BuildSggLibrary(BuildExtension):
    """Compiles SIMD_SOURCES with their own -m flags (setuptools has no per-file flags), and records the
    torch the libraries were built with and their floor next to them (sgg_kernels/_library.py reads it)."""

    def build_extension(self, ext):
        if ext.name == "sgg_kernels._C_cuda":  # links the core library, built just before it
            ext.library_dirs.append(os.path.dirname(self.get_ext_fullpath("sgg_kernels._C")))
        if ext.name == "sgg_kernels._C" and not self.compiler.compiler_type == "msvc":
            for src, flags in SIMD_SOURCES.items():
                ext.extra_objects += self.compiler.compile(
                    [src], output_dir=self.build_temp, macros=ext.define_macros, include_dirs=ext.include_dirs,
                    extra_postargs={"cxx": ext.extra_compile_args["cxx"] + flags}, depends=ext.depends)
        super().build_extension(ext)

    def run(self):
        start = time.monotonic()
        super().run()
        print(f"sgg_kernels: the library is built ({time.monotonic() - start:.0f} s)", flush=True)
        package_dirs = {os.path.join(self.build_lib, "sgg_kernels")}
        if self.inplace:
            package_dirs.add(os.path.join(HERE, "sgg_kernels"))
        for package_dir in package_dirs:
            with open(os.path.join(package_dir, "_build_info.json"), "w") as f:
                json.dump({"torch": torch.__version__, "floor": "{}.{}".format(*TORCH_FLOOR),
                           "cuda": torch.version.cuda if CUDA_HOME else None}, f)


setup(
    name="sgg_kernels",
    version="0.1.0",
    description="Fused kernels, schedules and samplers for weak-to-strong segmented guidance (SGG)",
    packages=find_packages(include=["sgg_kernels", "sgg_kernels.*"]),
    package_data={"sgg_kernels.bench": ["baselines/*.json"]},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
    python_requires=">=3.10",
    install_requires=[f"torch>={TORCH_FLOOR[0]}.{TORCH_FLOOR[1]}", "numpy", "tqdm"],
    extras_require={
        "triton": ["triton"],
        "diffusers": ["diffusers", "transformers", "accelerate"],
        "k-diffusion": ["k-diffusion"],
        "demo": ["matplotlib"],
        "test": ["pytest", "pytest-benchmark", "hypothesis"],
    },
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildSggLibrary},
)
