"""The float-or-tensor wrappers (sgg_kernels.guide, guided_step, guided_step_): floats become a float32
tensor on the operands' device, and during CUDA graph capture, where that host-to-device copy is
illegal, they are refused by argument name before anything runs (tests/gpu captures a real graph)."""
import types

import pytest
import torch

import sgg_kernels
from helpers import assert_matches_reference
from sgg_kernels.ops import as_coefficients

CUDA_LIKE = types.SimpleNamespace(device=torch.device("cuda", 0))  # as_coefficients reads only .device


def test_float_coefficients_match_tensor_coefficients():
    g = torch.Generator().manual_seed(0)
    x, c, u, w = (torch.randn(2, 3, 5, generator=g) for _ in range(4))
    out = sgg_kernels.guided_step(x, c, u, w, weights=(1.5, 0.5), step=[[1.0, -0.1], [0.9, -0.2]])
    assert_matches_reference(out, x, c, u, w, torch.tensor([1.5, 0.5]), torch.tensor([[1.0, -0.1], [0.9, -0.2]]))


@pytest.mark.parametrize("value", [(1.5, 0.5), torch.tensor([1.5, 0.5])], ids=["floats", "cpu tensor"])
def test_host_coefficients_are_refused_during_graph_capture(monkeypatch, value):
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with pytest.raises(RuntimeError, match=r"^step: .* cannot be copied to cuda:0 during CUDA graph capture"):
        as_coefficients(value, CUDA_LIKE, "step")


def test_host_coefficients_are_copied_outside_capture_and_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    got = as_coefficients([[1, 2]], torch.zeros(1), "weights")
    assert got.dtype == torch.float32 and got.tolist() == [[1.0, 2.0]]
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)  # CPU operands: no copy to refuse
    assert as_coefficients((3.0, 4.0), torch.zeros(1), "weights").tolist() == [3.0, 4.0]
