"""Checkpoint files: atomic writes, and loading a trained depth network for serving."""

from __future__ import annotations

import errno
import io
import logging
import os
import pickle
import re
import secrets
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from ssim_depth_core.config import TrainConfig, stored_config
from ssim_depth_core.errors import first_line, not_found

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks (see remove_stale_temporaries)
    fcntl = None

log = logging.getLogger(__name__)

# The temporary file write_atomic writes beside ``path`` before the rename: ``.<name>.<8 hex digits>.tmp``.
TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}\.tmp$")


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename: readers never see half a file.

    The file gets the mode a plain ``open(path, "w")`` gives (0666 less the umask), so other users of the
    machine can read the model files as they can any other. The writer holds an exclusive advisory lock
    (``flock``) on the temporary file from its creation to the rename; the kernel drops it when the writer
    dies (even by SIGKILL), which is how :func:`remove_stale_temporaries` tells an abandoned temporary from
    one being written. A failed write (a full disk: ENOSPC; a file-size limit: EFBIG; ...) removes the
    temporary and raises an ``OSError`` whose message names ``path``, the reason and that the previous file
    at ``path``, if any, is kept.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # a path under a regular file fails here
        fd, tmp = _create_locked_temporary(path)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            os.replace(tmp, path)  # before the close: the lock covers the whole life of the temporary
    except OSError as error:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
        hint = ""
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = " (disk full or over quota)"
        elif error.errno == errno.EFBIG:
            hint = " (over the file-size limit: ulimit -f, or the largest file the file system holds)"
        failure = OSError(f"cannot write {path}: {error.strerror or error}{hint}; {kept}")
        failure.errno = error.errno  # set after: OSError(errno, text) would put "[Errno N]" before the text
        raise failure from error
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


def _create_locked_temporary(path: Path) -> tuple[int, Path]:
    """Create ``path``'s temporary (exclusively, named by :data:`TEMP_PATTERN`) and lock it; returns the
    descriptor and the name."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
        if fcntl is None:
            return fd, tmp
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink > 0:
                return fd, tmp
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        # a cleaner removed it between our create and our lock (it unlinks while holding the lock): again
        os.close(fd)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporaries that interrupted :func:`write_atomic` calls left in ``folder``; returns them.

    Only files named as the writer names its temporaries (:data:`TEMP_PATTERN`) are considered, and only
    those that no live writer owns: a writer holds an exclusive ``flock`` on its temporary until the rename,
    and the kernel releases it when the writer exits or is killed, so a temporary this function can lock
    has been abandoned. (It unlinks while holding the lock; a writer that locks a temporary then finds it
    unlinked starts over with a new name.) Without ``fcntl`` (not POSIX) every matching file counts as
    abandoned: the caller must then be the folder's only writer.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in sorted(folder.iterdir()):
        if not TEMP_PATTERN.match(entry.name) or not entry.is_file() or entry.is_symlink():
            continue
        try:
            # read-write: on NFS, flock is emulated by POSIX locks, whose exclusive kind needs a writable fd
            fd = os.open(entry, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:  # renamed or removed meanwhile
            continue
        except OSError as error:
            log.warning("cannot check %s, left alone: %s", entry, error)
            continue
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.info("%s is being written by a live process: left alone", entry)
                    continue
                except OSError as error:
                    log.warning("cannot lock %s, left alone: %s", entry, error)
                    continue
            opened = os.fstat(fd)
            try:
                named = os.lstat(entry)
                if (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
                    continue  # its writer renamed it meanwhile: not a temporary any more
                entry.unlink()
            except FileNotFoundError:
                continue
        finally:
            os.close(fd)
        log.warning(
            "removed %s (%.1f MB): the temporary of an interrupted %s write (its process was killed?)",
            entry,
            opened.st_size / 1e6,
            TEMP_PATTERN.match(entry.name)["name"],
        )
        removed.append(entry)
    return removed


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (see :func:`write_atomic`)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getbuffer())


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", required: Collection[str] = ()
) -> dict[str, Any]:
    """Read a checkpoint written by the trainer, with a clear error for a missing or foreign file.

    Model files are data: the file is unpickled with ``weights_only=True`` (tensors, plain containers,
    numbers and strings), so a crafted checkpoint cannot run code; one that needs more is refused. Its
    ``config`` must be a mapping and its ``model`` a mapping of names to tensors; ``required`` names further
    keys it must hold (a training state's, for ``--resume``).
    """
    path = Path(path)
    if not path.is_file():
        raise not_found("checkpoint", path)
    _check_torch_container(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path}: refused: this file needs arbitrary unpickling (objects beyond tensors, containers, "
            "numbers and strings), which could run code; ssim_depth checkpoints never do "
            f"({first_line(error)})"
        ) from error
    except Exception as error:  # torch raises several unrelated types for a corrupt or non-torch file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({first_line(error)})") from error
    missing = {"config", "model", *required} - set(state if isinstance(state, dict) else ())
    if missing:
        raise ValueError(f"{path}: not an ssim_depth checkpoint (missing {', '.join(sorted(missing))})")
    model = state["model"]
    if not isinstance(state["config"], dict):
        raise ValueError(
            f"{path}: not an ssim_depth checkpoint (its config is a {type(state['config']).__name__})"
        )
    if not isinstance(model, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()
    ):
        raise ValueError(
            f"{path}: not an ssim_depth checkpoint (its model is not a mapping of names to tensors)"
        )
    return state


# torch.save's format before PyTorch 1.6: a protocol-2 pickle opening with a 10-byte long, its magic number
_LEGACY_TORCH_HEAD = b"\x80\x02\x8a\x0a"


def _check_torch_container(path: Path) -> None:
    """Refuse a file that torch.save did not write (a zip archive with a ``data.pkl``; before PyTorch 1.6 a
    pickle with its magic number) before torch.load misreads it, saying what it is."""
    with path.open("rb") as handle:
        head = handle.read(len(_LEGACY_TORCH_HEAD))
    kind = _foreign_kind(path, head)
    if kind:
        raise ValueError(f"{path}: not a PyTorch checkpoint but {kind}")


def _foreign_kind(path: Path, head: bytes) -> str:
    """What the file at ``path``, starting with ``head``, is when torch.save did not write it; "" when it
    did."""
    if head == _LEGACY_TORCH_HEAD:
        return ""
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return "a damaged zip archive (a truncated or corrupt download?)"
        if any(name.endswith("/constants.pkl") for name in names):
            return "a TorchScript model (torch.jit.save), not a training checkpoint"
        if any(name.endswith("/data.pkl") for name in names):
            return ""
        return "a zip archive that torch.save did not write"
    if head.startswith(b"\x80"):
        return "a pickle that torch.save did not write"
    # an ONNX ModelProto opens with field 1 (ir_version, a varint): tag byte 0x08
    if head.startswith(b"\x08") and _is_onnx_model(path):
        return "an ONNX model (an exported network, not a training checkpoint)"
    return "a file of another kind (torch.save writes a zip archive)"


def _is_onnx_model(path: Path) -> bool:
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # protobuf raises its own types for bytes that are not a ModelProto
        return False
    return model.ir_version > 0 and len(model.graph.node) > 0


def load_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], source: str | Path) -> None:
    """``module.load_state_dict(weights)`` (strict); ValueError naming ``source`` and summing up what does not
    fit (missing, unexpected and mis-shaped entries, the first of each) instead of torch's full report."""
    expected = module.state_dict()
    missing = [name for name in expected if name not in weights]
    unexpected = [name for name in weights if name not in expected]
    mis_shaped = [
        f"{name} {tuple(weights[name].shape)} for {tuple(value.shape)}"
        for name, value in expected.items()
        if name in weights and weights[name].shape != value.shape
    ]
    problems = [
        f"{len(found)} {what} (first: {found[0]})"
        for what, found in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped))
        if found
    ]
    if problems:
        raise ValueError(f"{source}: its weights do not fit this network: {'; '.join(problems)}")
    module.load_state_dict(weights)


def load_depth_net(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the trained :class:`DepthNet` (eval mode) and its training config from a checkpoint."""
    from ssim_depth_core.models.depth import DepthNet

    state = load_checkpoint(path, map_location)
    config: TrainConfig = stored_config(state["config"], path)  # a checkpoint of older keys too
    net = DepthNet.from_config(config.model, pretrained=False)
    prefix = "depth_net."
    weights = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    load_weights(net, weights, path)
    return net.eval(), config
