"""The one frame-sequence type every data source (KITTI raw, rosbag2, synthetic) produces."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ssim_depth_core.camera import Intrinsics


class FrameSequence(ABC):
    """An ordered recording from one camera.

    Attributes:
        name: stable identifier, e.g. ``2011_09_26/2011_09_26_drive_0001_sync`` or a bag path + topic.
        intrinsics: intrinsics at the native image resolution.
        timestamps: (N,) float64 seconds, non-decreasing.
    """

    name: str
    intrinsics: Intrinsics
    timestamps: np.ndarray

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
