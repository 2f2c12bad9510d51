"""Thread safety, determinism under threads, and 64-bit indexing of the CPU kernels."""
import threading

import pytest
import torch

import sgg_kernels  # noqa: F401
from helpers import assert_matches_reference, coefficients, make


def test_eight_threads_get_correct_results_concurrently():
    jobs = []
    for k in range(8):
        g = torch.Generator().manual_seed(k)
        shape = (2 + k % 3, 8, 33 + k, 17)
        dtype = (torch.float32, torch.bfloat16, torch.float16, torch.float64)[k % 4]
        x, c, u, w = (make(shape, dtype, "transpose" if k % 2 else "contiguous", g) for _ in range(4))
        jobs.append((x, c, u, w, coefficients(shape[0], True, g), coefficients(shape[0], k % 2 == 0, g, -1, 1)))
    results, errors = [None] * 8, []

    def work(k):
        try:
            x, c, u, w, weights, step = jobs[k]
            for _ in range(20):
                results[k] = torch.ops.sgg.guided_step(x, c, u, w, weights, step)
        except Exception as e:  # reported below: a thread's exception would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k, (x, c, u, w, weights, step) in enumerate(jobs):
        assert_matches_reference(results[k], x, c, u, w, weights, step)
        assert torch.equal(results[k], torch.ops.sgg.guided_step(x, c, u, w, weights, step))


@pytest.mark.slow
def test_more_than_2_31_elements():
    """One sample of 2^31 + 2^20 + 5 bf16 elements (about 13 GB with the output): offsets past 2^31
    must land on their own elements. Values are constant but for markers around the 2^31 boundary."""
    n = 2**31 + 2**20 + 5
    try:
        cond = torch.full((1, n), 1.0, dtype=torch.bfloat16)
        uncond = torch.full((1, n), 0.5, dtype=torch.bfloat16)
    except RuntimeError:
        pytest.skip("not enough memory for a 2^31-element test")
    marks = torch.tensor([0, 2**31 - 1, 2**31, 2**31 + 1, n - 1])
    cond[0, marks] = torch.tensor([2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.bfloat16)
    weights = torch.tensor([2.0, 0.0])
    out = torch.ops.sgg.guide(cond, uncond, None, weights)
    assert_matches_reference(out[:, marks], None, cond[:, marks], uncond[:, marks], None, weights, None)
    out[0, marks] = 2.0  # the constant value 1 + 2 (1 - 0.5): no element may differ from it
    assert not bool((out != 2.0).any())
