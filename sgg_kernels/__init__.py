"""sgg_kernels: fused kernels, schedules and samplers for weak-to-strong segmented guidance (SGG).

Importing the package registers the `torch.ops.sgg.*` operators.
"""
from . import ops as _ops  # noqa: F401  (registers torch.ops.sgg.*)
from . import w2s_loss as _w2s_loss  # noqa: F401  (registers torch.ops.sgg.w2s_loss)
from .backends import get_backend, set_backend, use_backend
from .ops import guide, guided_step, guided_step_
from .reference import guide_reference, guided_step_reference
from .schedule import GuidanceSchedule, Segment
from .training import W2SLoss

__all__ = [
    "GuidanceSchedule", "Segment", "W2SLoss", "get_backend", "guide", "guide_reference", "guided_step", "guided_step_",
    "guided_step_reference", "set_backend", "use_backend",
]
__version__ = "0.1.0"
