"""What `help()` shows a new user: the names the README calls without an import are exported, and the
docstrings state what the README leaves to them (what W2SLoss returns, which way t runs)."""
import sgg_kernels
from sgg_kernels import sampler


def test_sample_and_its_output_are_exported_from_the_package():
    assert sgg_kernels.sample is sampler.sample and sgg_kernels.SampleOutput is sampler.SampleOutput
    assert {"sample", "SampleOutput"} <= set(sgg_kernels.__all__)


def test_w2s_loss_forward_and_the_schedule_document_their_conventions():
    forward = sgg_kernels.W2SLoss.forward.__doc__
    assert forward and "Returns a scalar" in forward and "t = 1 noise" in forward
    assert "t = 1 is pure noise" in sgg_kernels.GuidanceSchedule.__doc__
