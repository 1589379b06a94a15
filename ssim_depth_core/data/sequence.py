"""The one frame-sequence type every data source (KITTI raw, rosbag2, synthetic) produces."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.imaging import FrameError


class FrameSequence(ABC):
    """An ordered recording from one camera.

    Attributes:
        name: stable identifier, e.g. ``2011_09_26/2011_09_26_drive_0001_sync`` or a bag path + topic.
        intrinsics: intrinsics at the native image resolution.
        timestamps: (N,) float64 seconds, non-decreasing.
        odometer: (N,) float64 metres travelled since an arbitrary start, at each frame's timestamp (NaN where
            the source has no odometry for that frame), or None when the source has no odometry at all.
        stereo_transform: 4x4 rigid transform from this camera's frame to its rectified stereo partner's
            (KITTI image_02 -> image_03: translation x = -0.54 m), or None when the source has no partner.
        frames_by_stamp: True when the frames are the recorded ones in stamp order, so frames lost or never
            recorded leave no index and neighbouring indices may lie further apart in time than one frame
            period (a bag); False when frame ``i`` is slot ``i`` of the recording whatever its stamp says
            (KITTI raw: a missing file keeps its slot and is an unreadable frame).
    """

    name: str
    intrinsics: Intrinsics
    timestamps: np.ndarray
    odometer: np.ndarray | None = None
    stereo_transform: np.ndarray | None = None
    frames_by_stamp: bool = True

    def __len__(self) -> int:
        return len(self.timestamps)

    @abstractmethod
    def image(self, index: int) -> np.ndarray:
        """Frame ``index`` as an H x W x 3 uint8 RGB array; raises ``imaging.FrameError`` if unreadable."""

    def depth(self, index: int) -> np.ndarray | None:
        """Ground-truth z-depth (H x W float32 metres, 0 = invalid) if the source has it, else None."""
        return None

    def pose(self, index: int) -> np.ndarray | None:
        """Ground-truth camera-to-world 4x4 pose if the source has it, else None."""
        return None

    def travel(self, index: int, other: int) -> float:
        """Metres travelled between frames ``index`` and ``other`` (odometer difference); NaN if unknown."""
        if self.odometer is None:
            return math.nan
        return float(abs(self.odometer[other] - self.odometer[index]))

    def stereo_image(self, index: int) -> np.ndarray:
        """The stereo partner's frame taken with frame ``index`` (H x W x 3 uint8 RGB, the same size and
        rectified intrinsics); raises ``imaging.FrameError`` when there is none for this frame."""
        raise FrameError(f"{self.name}: no stereo partner camera")
