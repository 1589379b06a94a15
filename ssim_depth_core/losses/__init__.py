"""Self-supervised losses: SSIM forms, photometric reprojection, smoothness, velocity supervision, and the
weighted objective."""

from ssim_depth_core.losses.bidirectional import (  # also registers photometric_bi, dsc_bi, feat_bi
    depth_difference,
    feature_perception_loss,
    occlusion_mask,
)
from ssim_depth_core.losses.objective import TERMS, LossOutput, Objective, register_term
from ssim_depth_core.losses.photometric import min_reprojection_loss, reprojection_error
from ssim_depth_core.losses.smoothness import edge_aware_smoothness
from ssim_depth_core.losses.ssim import FORMS, SSIMLoss, local_statistics, ssim_components
from ssim_depth_core.losses.supervised import supervised_depth_loss  # also registers the "supervised" term
from ssim_depth_core.losses.velocity import velocity_loss

__all__ = [
    "FORMS",
    "TERMS",
    "LossOutput",
    "Objective",
    "SSIMLoss",
    "depth_difference",
    "edge_aware_smoothness",
    "feature_perception_loss",
    "local_statistics",
    "min_reprojection_loss",
    "occlusion_mask",
    "register_term",
    "reprojection_error",
    "ssim_components",
    "supervised_depth_loss",
    "velocity_loss",
]
