"""W2SLoss refuses options the float32 op cannot hold and noise levels outside [0, 1], naming them."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import sgg_kernels  # noqa: F401
from sgg_kernels.training import W2SLoss


class HostReads(TorchDispatchMode):
    """Counts the ops that copy a tensor value to the host (bool(t), t.item()): each is a sync on a GPU."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


def segmented_batch(t):
    g = torch.Generator().manual_seed(0)
    v, u, weak, mid = (torch.randn(len(t), 3, 5, generator=g) for _ in range(4))
    return v, u, torch.tensor(t), weak, mid


@pytest.mark.parametrize("option", ["w_scale", "weak_loss_ratio", "weak_alpha"])
@pytest.mark.parametrize("value", [float("inf"), 1e39, float("nan")])
def test_option_beyond_float32_is_refused(option, value):
    with pytest.raises(ValueError, match=rf"W2SLoss: {option} must be a finite number in \[0, 3.403e\+38\]"):
        W2SLoss("segmented", **{option: value})


def test_largest_float32_strength_is_kept_exactly():
    biggest = torch.finfo(torch.float32).max
    coefs = W2SLoss("uncond", w_scale=biggest).coefficients(None, 2, torch.device("cpu"))
    assert coefs.tolist() == [biggest, 0.0, 0.0]


@pytest.mark.parametrize("bad", [float("nan"), 5.0, -1.0, float("inf")])
def test_segmented_loss_refuses_noise_levels_outside_0_1(bad):
    v, u, t, weak, mid = segmented_batch([0.5, bad, 0.1])
    with pytest.raises(ValueError, match=r"W2SLoss\(segmented\): t must hold noise levels in \[0, 1\] \(t = 1 is "
                                         r"noise\); 1 of 3 are not, the first at index 1"):
        W2SLoss("segmented")(v, u, t, weak=weak, mid=mid)


def test_validation_reads_t_on_the_host_once_and_validate_false_never():
    v, u, t, weak, mid = segmented_batch([0.0, 0.5, 1.0])  # both ends of the range are valid
    for validate, host_reads in ((True, 1), (False, 0)):
        with HostReads() as reads:
            W2SLoss("segmented", validate=validate, reduction="none")(v, u, t, weak=weak, mid=mid)
        assert reads.count == host_reads


def test_unvalidated_bad_noise_level_gives_a_nan_loss_for_its_sample_only():
    v, u, t, weak, mid = segmented_batch([0.5, float("nan"), 0.1, 5.0])
    checked = W2SLoss("segmented", reduction="none")
    unchecked = W2SLoss("segmented", validate=False, reduction="none")
    v.requires_grad_(True)
    losses = unchecked(v, u, t, weak=weak, mid=mid)
    losses.sum().backward()
    assert losses[[1, 3]].isnan().all() and v.grad[[1, 3]].isnan().all() and v.grad[[0, 2]].isfinite().all()
    v = v.detach()
    good = [0, 2]
    torch.testing.assert_close(losses[good], checked(v[good], u[good], t[good], weak=weak[good], mid=mid[good]),
                               rtol=0, atol=0)


def test_validate_must_be_a_bool():
    with pytest.raises(TypeError, match="W2SLoss: validate must be True or False, got 'yes'"):
        W2SLoss("segmented", validate="yes")
