"""sgg_kernels: fused kernels, schedules and samplers for weak-to-strong segmented guidance (SGG).

Importing the package loads the operator libraries (`torch.ops.sgg.*`) and registers the Python parts:
autograd, autocast, the traced (fake) kernels and the Triton backend.
"""
from . import _library

_library.load()

from . import fake_kernels as _fake_kernels  # noqa: E402,F401  (torch.compile and torch.export)
from . import ops as _ops  # noqa: E402,F401  (autograd of guide and guided_step)
from . import w2s_loss as _w2s_loss  # noqa: E402,F401  (autograd and autocast of w2s_loss)
from ._library import library_path, library_paths  # noqa: E402
from .backends import get_backend, set_backend, use_backend  # noqa: E402
from .ops import guide, guided_step, guided_step_  # noqa: E402
from .reference import guide_reference, guided_step_reference  # noqa: E402
from .sampler import SampleOutput, sample  # noqa: E402
from .schedule import GuidanceSchedule, Segment  # noqa: E402
from .training import W2SLoss  # noqa: E402

__all__ = [
    "GuidanceSchedule", "SampleOutput", "Segment", "W2SLoss", "get_backend", "guide", "guide_reference", "guided_step",
    "guided_step_", "guided_step_reference", "library_path", "library_paths", "sample", "set_backend", "use_backend",
]
__version__ = "0.1.0"
