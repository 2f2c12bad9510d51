"""End-to-end SD3 sampling on CPU, 28 steps of SGG: the reference loop vs this package (benchmarks/e2e_sd3.py).

    PYTHONPATH=$PWD python -m pytest benchmarks/test_bench_e2e.py --benchmark-columns=median,rounds

extra_info: NFE per image (sample-evaluations of the transformer) and the median seconds per image
spent in the model; the rest of the wall time is guidance, scheduler step and loop overhead.
"""
import statistics

import pytest
import torch

from benchmarks import e2e_sd3
from benchmarks.cases import SMOKE

ROUNDS = 1 if SMOKE else 5


@pytest.fixture(scope="module")
def one_thread():
    # The small model's ops are too small to share: on this busy 2-core machine two threads made the
    # tests' tiny SD3 forward ~30x slower (tests/test_diffusers_sd3.py).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("way", e2e_sd3.WAYS)
def test_sd3_sampling(benchmark, one_thread, way):
    pipe, inputs = e2e_sd3.build()
    clock = e2e_sd3.ModelClock(pipe.transformer)
    run = e2e_sd3.sampler(way, pipe)
    model_seconds, samples = [], []

    def one_image():
        clock.reset()
        out = run(inputs)
        model_seconds.append(clock.seconds)
        samples.append(clock.samples)
        return out

    benchmark.group = "e2e sd3 cpu"
    out = benchmark.pedantic(one_image, rounds=ROUNDS, warmup_rounds=0 if SMOKE else 1)
    # Both ways compute the same SGG sample (the drop-in's equivalence is tested in tests/); a wrong
    # setting here would time different work.
    expected = e2e_sd3.reference_loop(pipe, inputs)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    benchmark.extra_info.update(nfe=samples[-1], model_s=statistics.median(model_seconds), images=1,
                                threads=torch.get_num_threads())
