"""End-to-end SD3 sampling on CPU, 28 steps of SGG: the reference loop vs this package (sgg_kernels/bench/e2e_sd3.py).

    PYTHONPATH=$PWD python -m pytest benchmarks/test_bench_e2e.py --benchmark-columns=median,rounds

extra_info: NFE per image (sample-evaluations of the transformer), the median seconds per image spent
in the model, and outside it (guidance, scheduler step, loop and pipeline overhead).
"""
import pytest

pytest.importorskip("diffusers")

from sgg_kernels.bench import e2e_sd3  # noqa: E402

from benchmarks.conftest import PRESET  # noqa: E402

ROUNDS = 1 if PRESET == "tiny" else 5


@pytest.mark.parametrize("way", e2e_sd3.WAYS)
def test_sd3_sampling(benchmark, way):
    with e2e_sd3.one_thread():
        timer = e2e_sd3.ImageTimer(way)
        if PRESET != "tiny":
            timer()  # the warm-up image
            timer.reset()
        benchmark.group = "e2e sd3 cpu"
        out = benchmark.pedantic(timer, rounds=ROUNDS)
        row = timer.row()
    timer.check(out)
    benchmark.extra_info.update(nfe=row["nfe"], model_s=row["model_s"], other_s=row["other_s"], images=1,
                                threads=row["threads"])
