"""Checkpoint files: atomic writes, and loading a trained depth network for serving."""

from __future__ import annotations

import io
import os
import pickle
import secrets
from pathlib import Path
from typing import Any

import torch

from ssim_depth_core.config import TrainConfig, from_dict


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename: readers never see half a file.

    The file gets the mode a plain ``open(path, "w")`` gives (0666 less the umask), so other users of the
    machine can read the model files as they can any other.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (see :func:`write_atomic`)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getbuffer())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by the trainer, with a clear error for a missing or foreign file.

    Model files are data: the file is unpickled with ``weights_only=True`` (tensors, plain containers,
    numbers and strings), so a crafted checkpoint cannot run code; one that needs more is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path}: refused: this file needs arbitrary unpickling (objects beyond tensors, containers, "
            f"numbers and strings), which could run code; ssim_depth checkpoints never do ({error})"
        ) from error
    except Exception as error:  # torch raises several unrelated types for a corrupt or non-torch file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({error})") from error
    missing = {"config", "model"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise ValueError(f"{path}: not an ssim_depth checkpoint (missing {', '.join(sorted(missing))})")
    return state


def load_depth_net(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the trained :class:`DepthNet` (eval mode) and its training config from a checkpoint."""
    from ssim_depth_core.models.depth import DepthNet

    state = load_checkpoint(path, map_location)
    config: TrainConfig = from_dict(TrainConfig, state["config"])
    net = DepthNet(
        num_layers=config.model.num_layers,
        pretrained=False,
        padding_mode=config.model.padding_mode,
        scales=tuple(config.model.scales),
    )
    prefix = "depth_net."
    weights = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    net.load_state_dict(weights)
    return net.eval(), config
