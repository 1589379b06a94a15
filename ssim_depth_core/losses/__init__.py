"""Self-supervised losses: SSIM forms, photometric reprojection, smoothness, velocity supervision, and the
weighted objective."""

from ssim_depth_core.losses.objective import TERMS, LossOutput, Objective, register_term
from ssim_depth_core.losses.photometric import min_reprojection_loss, reprojection_error
from ssim_depth_core.losses.smoothness import edge_aware_smoothness
from ssim_depth_core.losses.ssim import FORMS, SSIMLoss, local_statistics, ssim_components
from ssim_depth_core.losses.velocity import velocity_loss

__all__ = [
    "FORMS",
    "TERMS",
    "LossOutput",
    "Objective",
    "SSIMLoss",
    "edge_aware_smoothness",
    "local_statistics",
    "min_reprojection_loss",
    "register_term",
    "reprojection_error",
    "ssim_components",
    "velocity_loss",
]
