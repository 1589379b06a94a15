"""Inference backends behind one interface: TensorRT engine, ONNX Runtime session, PyTorch checkpoint.

Every backend maps a float32 (B, 3, H, W) RGB batch in [0, 1] at its fixed ``input_size`` to the (B, 1, H, W)
sigmoid disparity, and reports the depth range the network was trained for and where its metric scale comes
from (``metric``). :func:`create_backend` picks one from the model file:

========== ================================================================================================
suffix     ``backend="auto"``
========== ================================================================================================
.engine    tensorrt (the only backend that reads engines)
.onnx      tensorrt when TensorRT, pycuda and a GPU are present and the graph passes
           ``export.onnx.check_tensorrt_ops`` (engine built once into the engine cache), otherwise onnxruntime
           (CUDA execution provider when available, else CPU): a graph TensorRT cannot take, such as an INT8
           model of the default ``cpu`` target (uint8 zero points), runs on ONNX Runtime, with a log line
           saying why (:func:`auto_backend`)
.pt, .pth  torch (eager; CUDA when available). Checkpoints are never converted implicitly: export them
           with ``ssim_depth_core.export`` to use the faster backends.
========== ================================================================================================
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from ssim_depth_core.accelerator import cuda_device, import_tensorrt, tensorrt_available
from ssim_depth_core.artifact import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportMetadata,
    engine_sidecar_path,
    metric_source,
)
from ssim_depth_core.checkpoint import load_depth_net
from ssim_depth_core.config import SIZE_MULTIPLE, to_dict
from ssim_depth_core.errors import not_found

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
DEVICES = ("auto", "cuda", "cpu")
_SUFFIX_BACKENDS = {
    ".engine": ("tensorrt",),
    ".onnx": ("tensorrt", "onnxruntime"),
    ".pt": ("torch",),
    ".pth": ("torch",),
}


class Backend(ABC):
    """A depth network ready to run.

    Attributes:
        name: "tensorrt", "onnxruntime" or "torch".
        input_size: (H, W) the network takes.
        min_depth, max_depth: the training depth range in metres (None when the model file does not say).
        metric: where the depth's metric scale comes from, one of ``artifact.METRIC_SOURCES``; "none" =
            scale-less (metres only up to a factor), also for model files that do not say.
        max_batch: the largest batch one inference call takes (None: any); larger batches are split.
        output: what the network returns, one of ``artifact.OUTPUT_KINDS``: "disparity" (every DepthNet head,
            the SQL head's depth converted in the graph; from the model file's metadata where it has one).
    """

    name: str
    input_size: tuple[int, int]
    min_depth: float | None
    max_depth: float | None
    metric: str
    max_batch: int | None = None
    output: str = "disparity"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Disparity of a batch.

        Args:
            batch: (B, 3, H, W) float32 RGB in [0, 1], (H, W) = ``input_size``.

        Returns:
            (B, 1, H, W) float32 sigmoid disparity.
        """
        if not isinstance(batch, np.ndarray) or batch.dtype != np.float32:
            kind = batch.dtype if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ValueError(f"{self.name} backend: batch must be a float32 numpy array, got {kind}")
        height, width = self.input_size
        if batch.ndim != 4 or batch.shape[0] == 0 or batch.shape[1:] != (3, height, width):
            raise ValueError(
                f"{self.name} backend: batch must have shape (B>=1, 3, {height}, {width}), got {batch.shape}"
            )
        batch = np.ascontiguousarray(batch)
        step = self.max_batch or len(batch)
        parts = [self._infer(batch[i : i + step]) for i in range(0, len(batch), step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Run at most ``max_batch`` validated, contiguous frames."""

    def close(self) -> None:  # noqa: B027 - optional hook, only backends holding device memory override it
        """Release device resources (the backend is unusable afterwards)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        height, width = self.input_size
        return (
            f"{type(self).__name__}({height}x{width}, depth {self.min_depth}..{self.max_depth} m, "
            f"metric {self.metric})"
        )


class TorchBackend(Backend):
    """Eager PyTorch on a training checkpoint.

    Args:
        checkpoint: trainer checkpoint (``.pt``).
        device: "auto" (CUDA when available), "cuda" or "cpu".
        height, width: input size; default the training resolution. Multiples of 32.
    """

    name = "torch"

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "auto",
        height: int | None = None,
        width: int | None = None,
    ) -> None:
        net, config = load_depth_net(checkpoint)
        self.input_size = (height or config.data.height, width or config.data.width)
        if any(size % SIZE_MULTIPLE for size in self.input_size):
            raise ValueError(
                f"torch backend: input size {self.input_size} must be multiples of {SIZE_MULTIPLE}"
            )
        self.device = _torch_device(device)
        self.min_depth, self.max_depth = config.model.min_depth, config.model.max_depth
        self.metric = metric_source(to_dict(config))
        self._net = net.to(self.device)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self._net(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime session on an exported model; size, depth range and metric come from its metadata props.

    Args:
        onnx_path: model from ``export_onnx``.
        device: "auto" (CUDAExecutionProvider when onnxruntime has it), "cuda" or "cpu".
        threads: intra-op CPU threads; None = onnxruntime's default (one per core).
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise not_found("ONNX model", onnx_path)
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        if device == "cuda" and not has_cuda:
            raise RuntimeError(
                "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu), or use device='cpu'"
            )
        providers = ["CPUExecutionProvider"]
        if has_cuda and device != "cpu":
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for unreadable models
            raise ValueError(f"{onnx_path}: ONNX Runtime cannot load the model ({error})") from error
        self.providers = self._session.get_providers()
        metadata = ExportMetadata.from_props(self._session.get_modelmeta().custom_metadata_map, onnx_path)
        self.input_size = (metadata.height, metadata.width)
        self.min_depth, self.max_depth = metadata.min_depth, metadata.max_depth
        self.metric, self.output = metadata.metric, metadata.output
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise ValueError(f"{onnx_path}: expected input '{INPUT_NAME}' and output '{OUTPUT_NAME}'")
        (model_input,), (model_output,) = inputs, outputs
        for tensor, channels in ((model_input, 3), (model_output, 1)):
            expected = ["N", channels, *self.input_size]
            if tensor.type != "tensor(float)" or not _fits(tensor.shape, expected):
                raise ValueError(
                    f"{onnx_path}: '{tensor.name}' is {tensor.type} {tensor.shape}; an ssim_depth model of "
                    f"this metadata takes and gives float32 {expected}"
                )
        batch = model_input.shape[0]
        self.max_batch = batch if isinstance(batch, int) else None
        logger.info("onnxruntime providers for %s: %s", onnx_path, self.providers)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


def _fits(shape: list, expected: list) -> bool:
    """Whether an ONNX tensor shape (ints, or names/None for free dimensions) can be ``expected`` (ints, or a
    name for a dimension that may be anything)."""
    return len(shape) == len(expected) and all(
        not isinstance(got, int) or not isinstance(want, int) or got == want
        for got, want in zip(shape, expected, strict=True)
    )


class TensorRTBackend(Backend):
    """A serialized TensorRT engine run with pycuda: page-locked host buffers, async copies on one stream.

    The depth range and metric source come from the engine's metadata sidecar (written by ``build_engine``);
    without one, ``min_depth``/``max_depth`` stay None unless given here and ``metric`` is "none". Engines
    with a dynamic batch take up to the maximum of optimisation profile 0, static ones exactly their batch.

    Args:
        engine_path: serialized engine (``.engine``).
        min_depth, max_depth: override the sidecar's depth range.
    """

    name = "tensorrt"

    def __init__(
        self, engine_path: str | Path, min_depth: float | None = None, max_depth: float | None = None
    ) -> None:
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise not_found("TensorRT engine", engine_path)
        sidecar = engine_sidecar_path(engine_path)
        metadata = read_engine_sidecar(sidecar) if sidecar.is_file() else None
        trt = import_tensorrt()
        cuda, device = cuda_device()
        self._cuda = cuda
        self.min_depth, self.max_depth, self.metric = min_depth, max_depth, "none"
        if metadata is None:
            logger.warning(
                "%s: no metadata sidecar %s: metric source unknown, taken as 'none'", engine_path, sidecar
            )
        else:
            self.min_depth = metadata.min_depth if min_depth is None else min_depth
            self.max_depth = metadata.max_depth if max_depth is None else max_depth
            self.metric, self.output = metadata.metric, metadata.output

        # Share the device's primary context with PyTorch / other CUDA users instead of creating another.
        self._cuda_context = device.retain_primary_context()
        self._cuda_context.push()
        try:
            self._trt_logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._trt_logger)
            self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if self._engine is None:
                raise RuntimeError(
                    f"{engine_path}: TensorRT {trt.__version__} cannot deserialize this engine; engines only "
                    "run on the GPU model and TensorRT version that built them, rebuild it with build_engine"
                )
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            modes = {n: self._engine.get_tensor_mode(n) for n in names}
            inputs = [n for n in names if modes[n] == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if modes[n] == trt.TensorIOMode.OUTPUT]
            if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
                raise ValueError(
                    f"{engine_path}: expected input '{INPUT_NAME}' and output '{OUTPUT_NAME}', "
                    f"got inputs {inputs} and outputs {outputs}"
                )
            for name in names:
                if trt.nptype(self._engine.get_tensor_dtype(name)) != np.float32:
                    raise ValueError(f"{engine_path}: tensor '{name}' is not float32")
            batch, channels, height, width = self._engine.get_tensor_shape(INPUT_NAME)
            self._dynamic_batch = batch == -1
            if self._dynamic_batch:
                batch = self._engine.get_tensor_profile_shape(INPUT_NAME, 0)[2][0]
            if channels != 3 or height < 1 or width < 1:
                raise ValueError(f"{engine_path}: input shape must be (B, 3, H, W) with a fixed H and W")
            self.max_batch = batch
            self.input_size = (height, width)
            if metadata is not None and (metadata.height, metadata.width) != self.input_size:
                raise ValueError(
                    f"{sidecar}: metadata size {metadata.height}x{metadata.width} does not match the engine "
                    f"input {height}x{width}"
                )

            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            self._host_in = cuda.pagelocked_empty((batch, 3, height, width), np.float32)
            self._host_out = cuda.pagelocked_empty((batch, 1, height, width), np.float32)
            self._device_in = cuda.mem_alloc(self._host_in.nbytes)
            self._device_out = cuda.mem_alloc(self._host_out.nbytes)
            self._context.set_tensor_address(INPUT_NAME, int(self._device_in))
            self._context.set_tensor_address(OUTPUT_NAME, int(self._device_out))
        finally:
            self._cuda_context.pop()
        logger.info("loaded TensorRT engine %s (batch <= %d, %dx%d)", engine_path, batch, height, width)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        count = len(batch)
        self._cuda_context.push()
        try:
            if self._dynamic_batch:
                self._context.set_input_shape(INPUT_NAME, (count, 3, *self.input_size))
            host_in, host_out = self._host_in[:count], self._host_out[:count]
            np.copyto(host_in, batch)
            self._cuda.memcpy_htod_async(self._device_in, host_in, self._stream)
            if not self._context.execute_async_v3(self._stream.handle):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
            self._cuda.memcpy_dtoh_async(host_out, self._device_out, self._stream)
            self._stream.synchronize()
            return host_out.copy()
        finally:
            self._cuda_context.pop()

    def close(self) -> None:
        if getattr(self, "_context", None) is None:
            return
        self._cuda_context.push()
        try:
            self._device_in.free()
            self._device_out.free()
            self._context = self._engine = self._runtime = None
        finally:
            self._cuda_context.pop()
            self._cuda_context.detach()


def read_engine_sidecar(sidecar: str | Path) -> ExportMetadata:
    """The model metadata in an engine's JSON sidecar (written by ``export.tensorrt.build_engine``).

    Raises:
        ValueError: naming ``sidecar`` and what is wrong: not UTF-8 JSON, not an object, no "metadata"
            object, or metadata that ``ExportMetadata.from_props`` refuses (a missing or malformed field).
    """
    sidecar = Path(sidecar)
    rebuild = "rebuild the engine with build_engine (or delete the sidecar to serve it without metadata)"
    try:
        content = json.loads(sidecar.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{sidecar}: engine metadata sidecar is not JSON ({error}); {rebuild}") from error
    if not isinstance(content, dict):
        raise ValueError(
            f"{sidecar}: engine metadata sidecar must be a JSON object, got {type(content).__name__}; "
            f"{rebuild}"
        )
    props = content.get("metadata")
    if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
        if props is None:
            found = "missing"
        elif isinstance(props, dict):
            found = "an object with non-string values"
        else:
            found = f"a {type(props).__name__}"
        raise ValueError(
            f"{sidecar}: engine metadata sidecar field 'metadata' is {found}; it must be an object of "
            f"strings (the ONNX metadata props); {rebuild}"
        )
    return ExportMetadata.from_props(props, sidecar)


def auto_backend(
    model_path: str | Path, device: str = "auto", tensorrt: bool | None = None
) -> tuple[str, str]:
    """The backend ``backend="auto"`` picks for ``model_path``, and why (see the module docstring).

    Args:
        model_path: ``.engine``, ``.onnx`` or ``.pt``/``.pth`` (the suffix is checked by the caller).
        device: "cpu" rules out TensorRT.
        tensorrt: whether TensorRT, pycuda and a GPU are present; None: ask ``tensorrt_available()``.

    Returns:
        (backend name, reason). An ``.onnx`` model goes to TensorRT only when ``check_tensorrt_ops`` finds
        nothing TensorRT 10 would reject; otherwise to onnxruntime, the reason naming the first problem.
    """
    model_path = Path(model_path)
    suffix = model_path.suffix.lower()
    readers = _SUFFIX_BACKENDS[suffix]
    if suffix != ".onnx":
        return readers[0], f"the only backend for {suffix} files"
    if device == "cpu":
        return "onnxruntime", "device='cpu'"
    if not (tensorrt_available() if tensorrt is None else tensorrt):
        return "onnxruntime", "TensorRT, pycuda or a GPU is unavailable"
    import onnx

    from ssim_depth_core.export.onnx import check_tensorrt_ops

    try:
        model = onnx.load(model_path, load_external_data=False)
    except Exception as error:  # protobuf raises its own types; let onnxruntime report the file
        return "onnxruntime", f"onnx cannot parse the file to check it for TensorRT ({error})"
    problems = check_tensorrt_ops(model)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return "onnxruntime", (
            f"TensorRT 10 cannot take this graph: {problems[0]}{more}; an INT8 model for TensorRT is "
            "exported with --int8 --int8-target tensorrt"
        )
    return "tensorrt", "TensorRT, pycuda and a GPU are available and the graph passes the TensorRT op check"


def create_backend(
    model_path: str | Path,
    backend: str = "auto",
    *,
    device: str = "auto",
    precision: str | None = None,
    cache_dir: str | Path | None = None,
    threads: int | None = None,
) -> Backend:
    """Open ``model_path`` with the named backend, or for ``"auto"`` the fastest one that can run it.

    Args:
        model_path: ``.engine``, ``.onnx`` or ``.pt``/``.pth`` (see the module docstring for the rule).
        backend: "auto", "tensorrt", "onnxruntime" or "torch".
        device: "auto", "cuda" or "cpu" for the onnxruntime and torch backends; "cpu" rules out TensorRT.
        precision, cache_dir: engine build settings when TensorRT runs an ``.onnx`` file (precision None: the
            model's, "int8" for an INT8 (Q/DQ) model, else "fp16"; see ``export.tensorrt.build_engine``).
        threads: intra-op CPU threads of the onnxruntime backend; None = its default (one per core). The
            other backends do not take it (torch's thread count is process-wide).

    Raises:
        ValueError: unknown suffix, backend or device, a backend that cannot read this file type, or (an
            explicit "tensorrt" for an ``.onnx``) a graph TensorRT 10 cannot take, naming what it rejects.
    """
    model_path = Path(model_path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    suffix = model_path.suffix.lower()
    if suffix not in _SUFFIX_BACKENDS:
        raise ValueError(
            f"{model_path}: unknown model file suffix {suffix!r}; expected one of {sorted(_SUFFIX_BACKENDS)}"
        )
    readers = _SUFFIX_BACKENDS[suffix]
    if backend == "auto":
        backend, reason = auto_backend(model_path, device)
        logger.info("backend auto -> %s for %s (%s)", backend, model_path, reason)
    elif backend not in readers:
        raise ValueError(f"{model_path}: the {backend} backend cannot read {suffix} files; use {readers}")
    if backend == "tensorrt" and device == "cpu":
        raise ValueError("the tensorrt backend runs on a GPU; device='cpu' is contradictory")

    if backend == "torch":
        return TorchBackend(model_path, device=device)
    if backend == "onnxruntime":
        return OnnxRuntimeBackend(model_path, device=device, threads=threads)
    if suffix == ".onnx":
        from ssim_depth_core.export.tensorrt import build_engine  # the engine cache: built once per GPU

        model_path = build_engine(model_path, precision=precision, cache_dir=cache_dir)
    return TensorRTBackend(model_path)


def _torch_device(device: str) -> torch.device:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("torch backend: device='cuda' but PyTorch sees no CUDA GPU")
    return torch.device(device)
