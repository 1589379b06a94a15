"""Pinhole camera intrinsics: one type for KITTI calib files, ROS CameraInfo fields and training scales."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Focal lengths outside [MIN, MAX] x the image's larger side are not a camera but a corrupt calibration: the
# pinhole field of view would exceed ~177.7 degrees (1e-30 puts every point at infinity) or be under ~0.06
# degrees (every point on the optical axis).
MIN_FOCAL_RATIO, MAX_FOCAL_RATIO = 0.01, 1000.0


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels for an image of ``width`` x ``height``.

    Frozen and hashable, so it can key caches (e.g. the ray grid of point-cloud packing). The constructor is
    the one plausibility check of every camera (KITTI calib, CameraInfo, parameters): it raises ValueError
    for a non-finite value, a focal length <= 0 or outside [MIN_FOCAL_RATIO, MAX_FOCAL_RATIO] x the larger
    image side, or a principal point outside the image (pixel centres at integer coordinates: -0.5 <= cx <=
    width - 0.5).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @staticmethod
    def check_values(fx: float, fy: float, cx: float, cy: float) -> None:
        """The checks that need no image size: finite values, positive focal lengths; raises ValueError."""
        if not all(math.isfinite(v) for v in (fx, fy, cx, cy)):
            raise ValueError(f"intrinsics must be finite numbers, got fx={fx}, fy={fy}, cx={cx}, cy={cy}")
        if fx <= 0 or fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={fx}, fy={fy}")

    def __post_init__(self) -> None:
        self.check_values(self.fx, self.fy, self.cx, self.cy)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        side = max(self.width, self.height)
        if not all(MIN_FOCAL_RATIO * side <= f <= MAX_FOCAL_RATIO * side for f in (self.fx, self.fy)):
            raise ValueError(
                f"focal lengths fx={self.fx}, fy={self.fy} are implausible for a {self.width}x{self.height} "
                f"image (expected {MIN_FOCAL_RATIO:g} to {MAX_FOCAL_RATIO:g} x {side} pixels)"
            )
        if not (-0.5 <= self.cx <= self.width - 0.5 and -0.5 <= self.cy <= self.height - 0.5):
            raise ValueError(
                f"principal point cx={self.cx}, cy={self.cy} lies outside the "
                f"{self.width}x{self.height} image"
            )

    @classmethod
    def from_list(cls, values: Sequence[float]) -> Intrinsics:
        """Build from ``[fx, fy, cx, cy, width, height]`` (the config's and the command line's form)."""
        if len(values) != 6:
            raise ValueError(f"expected [fx, fy, cx, cy, width, height], got {list(values)!r}")
        fx, fy, cx, cy, width, height = values
        if not all(math.isfinite(value) for value in values):
            raise ValueError(f"expected finite numbers, got {list(values)!r}")
        if width != int(width) or height != int(height):
            raise ValueError(f"width and height must be whole pixels, got {width} x {height}")
        return cls(float(fx), float(fy), float(cx), float(cy), int(width), int(height))

    @classmethod
    def from_matrix(cls, matrix: Sequence[float] | np.ndarray, width: int, height: int) -> Intrinsics:
        """Build from a 3x3 K or a 3x4 projection matrix P (row-major, flat or 2-D)."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.size == 9:
            m = m.reshape(3, 3)
        elif m.size == 12:
            m = m.reshape(3, 4)
        else:
            raise ValueError(f"expected a 3x3 K or 3x4 P matrix (9 or 12 values), got {m.size} values")
        return cls(float(m[0, 0]), float(m[1, 1]), float(m[0, 2]), float(m[1, 2]), int(width), int(height))

    @classmethod
    def from_camera_info(
        cls, k: Sequence[float], width: int, height: int, p: Sequence[float] | None = None
    ) -> Intrinsics:
        """Build from sensor_msgs/CameraInfo fields.

        For a rectified image stream the projection matrix ``p`` is authoritative; ``k`` is used when ``p``
        is absent or all zeros (an uncalibrated driver). A ``k`` set beside ``p`` must be a valid camera too:
        a message with a broken K is not one to trust, nor to rescale. ValueError names the matrix (K or P).
        """
        matrices = {"P": p, "K": k}
        named = [(name, m) for name, m in matrices.items() if m is not None and np.any(np.asarray(m) != 0)]
        if not named:
            raise ValueError("CameraInfo has neither K nor P set (all zeros): the camera is uncalibrated")
        cameras = []
        for name, matrix in named:
            try:
                cameras.append(cls.from_matrix(matrix, width, height))
            except ValueError as error:
                raise ValueError(f"CameraInfo {name}: {error}") from None
        return cameras[0]

    @classmethod
    def from_kitti_calib(cls, calib_cam_to_cam: str | Path, camera: str = "02") -> Intrinsics:
        """Read ``P_rect_<camera>`` and ``S_rect_<camera>`` from a KITTI ``calib_cam_to_cam.txt``; ValueError
        naming the file, the key and the value for a missing key, a size that is not two positive whole
        numbers or a camera the constructor rejects."""
        values = read_kitti_calib(calib_cam_to_cam)
        p_key, s_key = f"P_rect_{camera}", f"S_rect_{camera}"
        for key in (p_key, s_key):
            if key not in values:
                raise ValueError(f"{calib_cam_to_cam}: missing '{key}'")
        size = values[s_key]
        if size.size != 2 or np.any(size <= 0) or np.any(size != np.round(size)):
            raise ValueError(
                f"{calib_cam_to_cam}: '{s_key}' must be two positive whole numbers (width height), got "
                f"{' '.join(f'{v:g}' for v in size) or 'none'}"
            )
        try:
            return cls.from_matrix(values[p_key], int(size[0]), int(size[1]))
        except ValueError as error:
            raise ValueError(f"{calib_cam_to_cam}: {p_key}, {s_key}: {error}") from None

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera resampled to ``width`` x ``height`` (a plain resize, no crop).

        Pixel centres sit at integer coordinates, and a resize (cv2, torch ``align_corners=False``) maps
        coordinate ``c`` to ``(c + 0.5) * s - 0.5``.
        """
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
            int(width),
            int(height),
        )

    def fitted(self, width: int, height: int, source: str) -> Intrinsics:
        """These intrinsics at an image of ``width`` x ``height``: rescaled when only the resolution differs.

        Raises ValueError naming ``source`` when the aspect ratio differs by more than 1 % (a crop, or the
        wrong camera), since a plain rescale would then be wrong.
        """
        if (self.width, self.height) == (width, height):
            return self
        if abs(self.width / self.height - width / height) > 0.01 * width / height:
            raise ValueError(
                f"{source}: intrinsics are for {self.width}x{self.height} but the images are "
                f"{width}x{height} (a different aspect ratio)"
            )
        logger.info(
            "%s: rescaling intrinsics from %dx%d to the image size %dx%d",
            source,
            self.width,
            self.height,
            width,
            height,
        )
        return self.scaled(width, height)

    @property
    def matrix(self) -> np.ndarray:
        """3x3 K as float64."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def K(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        """3x3 K as a tensor."""
        return torch.as_tensor(self.matrix, dtype=dtype, device=device)

    def inv_K(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """3x3 inverse of K as a tensor (computed in float64, then cast)."""
        return torch.as_tensor(np.linalg.inv(self.matrix), dtype=dtype, device=device)


def read_kitti_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Parse a KITTI ``key: v1 v2 ...`` calibration file (``calib_time``, a date, is skipped).

    ValueError naming the file, line, key and value for an unreadable file, a repeated key, or a value that
    is not a finite number (a NaN would reach the warp and the gradients).
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the calibration file ({err})") from None
    values: dict[str, np.ndarray] = {}
    lines: dict[str, int] = {}
    for line_no, line in enumerate(text.splitlines(), 1):
        key, colon, rest = line.partition(":")
        key = key.strip()
        if not colon or key == "calib_time":
            continue
        if key in lines:
            raise ValueError(f"{path}:{line_no}: '{key}' appears again (first on line {lines[key]})")
        numbers = []
        for position, token in enumerate(rest.split(), 1):
            try:
                number = float(token)
            except ValueError:
                number = None
            if number is None or not math.isfinite(number):
                raise ValueError(
                    f"{path}:{line_no}: '{key}' value {position} is {token!r}: expected a finite number"
                )
            numbers.append(number)
        values[key], lines[key] = np.array(numbers, dtype=np.float64), line_no
    return values
