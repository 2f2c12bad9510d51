"""Property-based equivalence on the GPU, both backends: the hypothesis inputs of
tests/test_properties.py, on CUDA with the same strides, against the float64 reference and bit for
bit against the CPU kernel (both round to nearest, neither fuses multiply-adds)."""
import pytest
import torch
from hypothesis import given, settings

from helpers import assert_matches_reference
from sgg_kernels import use_backend
from strategies import guidance_inputs
from test_gpu_backends import to_cuda

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("backend", ["cuda", "triton"])
@settings(max_examples=80, deadline=None)
@given(inputs=guidance_inputs())
def test_gpu_backend_matches_reference_and_cpu(backend, inputs):
    x, cond, uncond, weak, weights, step = inputs
    on_gpu = [to_cuda(t) for t in inputs]
    with use_backend(backend):
        got = torch.ops.sgg.guided_step(*on_gpu)
    assert_matches_reference(got.cpu(), x, cond, uncond, weak, weights, step)
    assert torch.equal(got.cpu(), torch.ops.sgg.guided_step(x, cond, uncond, weak, weights, step))
