"""Builds sgg_kernels._C: the CPU kernels always, the CUDA kernels when torch is a CUDA build and nvcc exists.

    pip install --no-build-isolation -e .        # the Makefile does this inside .venv
"""
import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def sources(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, "csrc", pattern), recursive=True))


# The dense CPU kernel is compiled once per SIMD level and chosen at run time
# (csrc/cpu/guidance_cpu.cpp), so one wheel runs everywhere and uses AVX-512 where it exists.
SIMD_SOURCES = {
    "csrc/cpu/guidance_avx2.cpp": ["-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2", "-mlzcnt", "-mpopcnt"],
    "csrc/cpu/guidance_avx512.cpp": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma",
                                     "-mf16c", "-mbmi", "-mbmi2", "-mlzcnt", "-mpopcnt"],
}


def extension():
    # -fopenmp: at::parallel_for is an inline OpenMP loop; without it the kernels run on one thread.
    # -ffp-contract=off: GCC would fuse the SIMD mul+add into FMA, so the AVX builds, the scalar tail
    # and the strided walk would round differently; unfused, every path agrees bit for bit.
    cxx = ["-O3", "-fopenmp", "-ffp-contract=off", "-Wno-unknown-pragmas"]  # C++ standard: the one torch asks for
    return CppExtension(
        "sgg_kernels._C",
        [s for s in sources("*.cpp") + sources("cpu/*.cpp") if s not in SIMD_SOURCES],
        extra_compile_args={"cxx": cxx},
        extra_link_args=["-fopenmp"],
    )


class BuildExtensionWithSimd(BuildExtension):
    """Compiles SIMD_SOURCES with their own -m flags (setuptools has no per-file flags)."""

    def build_extension(self, ext):
        if ext.name == "sgg_kernels._C" and not self.compiler.compiler_type == "msvc":
            for src, flags in SIMD_SOURCES.items():
                ext.extra_objects += self.compiler.compile(
                    [src], output_dir=self.build_temp, macros=ext.define_macros, include_dirs=ext.include_dirs,
                    extra_postargs={"cxx": ext.extra_compile_args["cxx"] + flags}, depends=ext.depends)
        super().build_extension(ext)


setup(
    name="sgg_kernels",
    version="0.1.0",
    description="Fused kernels, schedules and samplers for weak-to-strong segmented guidance (SGG)",
    packages=find_packages(include=["sgg_kernels", "sgg_kernels.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.6", "numpy", "tqdm"],
    extras_require={
        "triton": ["triton"],
        "diffusers": ["diffusers", "transformers", "accelerate"],
        "demo": ["matplotlib"],
        "test": ["pytest", "pytest-benchmark", "hypothesis"],
    },
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtensionWithSimd},
)
