"""ONNX -> TensorRT 10 engine builder with an engine cache keyed by model, GPU and TensorRT version.

A serialized engine only runs on the GPU model and TensorRT version that built it. The cache key therefore
hashes the ONNX bytes together with the GPU name, its compute capability, the TensorRT version and the
precision: a moved disk, a new GPU or an upgraded TensorRT gets a new key, so the engine is rebuilt instead of
a stale one being loaded. Beside each engine a ``<engine>.json`` sidecar keeps the ONNX metadata props (depth
range, input size, config, metric source) that a runtime needs, since an engine file cannot carry them.

INT8 is explicit quantisation (TensorRT 10 deprecated the implicit calibrators, ``IInt8Calibrator`` and its
calibration cache, in 10.1): the model is the Q/DQ graph of ``export.quantize`` (``--int8-target tensorrt``),
whose scales are the calibration, built with ``BuilderFlag.INT8`` (required to parse Q/DQ layers) and
``BuilderFlag.FP16`` (for the layers left in float: input normalisation, the disparity head). The key's ONNX
hash covers those scales, so a different calibration gets a different engine.

``tensorrt`` and ``pycuda`` are optional (extra ``tensorrt``) and imported only inside functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import onnx

from ssim_depth_core.accelerator import cuda_device, import_tensorrt
from ssim_depth_core.artifact import engine_sidecar_path, read_metadata
from ssim_depth_core.checkpoint import write_atomic
from ssim_depth_core.errors import not_found
from ssim_depth_core.export.onnx import check_tensorrt_ops, is_quantized

logger = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32", "int8")
DEFAULT_CACHE_DIR = Path("~/.cache/ssim_depth/engines")


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX model or build an engine from it."""


def engine_cache_key(
    onnx_bytes: bytes, gpu_name: str, compute_capability: tuple[int, int], trt_version: str, precision: str
) -> str:
    """Hex sha256 identifying the engine built from these inputs.

    It is the sha256 of the UTF-8 text ``"onnx_sha256=<hex sha256 of onnx_bytes>\\ngpu=<gpu_name>\\n
    compute_capability=<major>.<minor>\\ntensorrt=<trt_version>\\nprecision=<precision>\\n"``. For "int8" the
    ONNX bytes hold the calibration (the Q/DQ scales): another calibration is another key.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    major, minor = compute_capability
    text = (
        f"onnx_sha256={hashlib.sha256(onnx_bytes).hexdigest()}\n"
        f"gpu={gpu_name}\n"
        f"compute_capability={int(major)}.{int(minor)}\n"
        f"tensorrt={trt_version}\n"
        f"precision={precision}\n"
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path | None = None,
    precision: str | None = None,
    workspace_gb: float = 2.0,
    cache_dir: str | Path | None = None,
) -> Path:
    """Build (or fetch from the cache) a serialized TensorRT engine for an exported ONNX model.

    Args:
        onnx_path: model from :func:`ssim_depth_core.export.onnx.export_onnx` (weights inside the file).
        engine_path: where to write the engine; always built. ``None`` uses the cache: a file named by
            :func:`engine_cache_key` in ``cache_dir``, reused when present, built otherwise.
        precision: "fp16" (FP16 kernels allowed; inputs/outputs stay float32), "fp32" (TF32 off too), "int8"
            (a Q/DQ model only: INT8 where its Q/DQ nodes say, FP16 allowed elsewhere), or None: "int8" for a
            Q/DQ model, "fp16" otherwise.
        workspace_gb: builder workspace memory limit in GiB.
        cache_dir: engine cache folder, default ``~/.cache/ssim_depth/engines``.

    Returns:
        The engine path; its metadata sidecar is :func:`engine_sidecar_path`.

    Raises:
        ValueError: bad precision/workspace, "int8" for a model without Q/DQ nodes or another precision for
            one with them, an op or attribute TensorRT 10 does not support, or missing or malformed model
            metadata.
        TensorRTUnavailableError: tensorrt, pycuda or a GPU is missing.
        EngineBuildError: the parser or builder failed (its messages are included).
    """
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} or None, got {precision!r}")
    if not workspace_gb > 0:
        raise ValueError(f"workspace_gb must be > 0, got {workspace_gb!r}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise not_found("ONNX model", onnx_path)
    onnx_bytes = onnx_path.read_bytes()
    model = onnx.load_model_from_string(onnx_bytes)
    quantized = is_quantized(model)
    precision = precision or ("int8" if quantized else "fp16")
    if quantized != (precision == "int8"):
        raise ValueError(
            f"{onnx_path}: precision {precision!r} for a model with Q/DQ nodes; it builds as 'int8' only"
            if quantized
            else f"{onnx_path}: precision 'int8' needs a quantised model with Q/DQ nodes (export it with "
            "--int8 --int8-target tensorrt); TensorRT 10 has no implicit INT8 calibration here"
        )
    problems = check_tensorrt_ops(model)
    if problems:
        hint = (
            "\n(an INT8 model for TensorRT is exported with --int8 --int8-target tensorrt)"
            if quantized
            else ""
        )
        raise ValueError(f"{onnx_path} is not TensorRT 10 compatible:\n  " + "\n  ".join(problems) + hint)

    trt = import_tensorrt()
    _, device = cuda_device()
    metadata = read_metadata(model, onnx_path)  # checked before the build; normalised in the sidecar
    gpu_name, capability = device.name(), device.compute_capability()
    key = engine_cache_key(onnx_bytes, gpu_name, capability, trt.__version__, precision)
    if engine_path is None:
        folder = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
        engine_path = folder / f"{onnx_path.stem}-{precision}-{key[:16]}.engine"
        if engine_path.is_file() and engine_sidecar_path(engine_path).is_file():
            logger.info("TensorRT engine cache hit: %s", engine_path)
            return engine_path
    engine_path = Path(engine_path)

    logger.info(
        "building a TensorRT %s %s engine for %s on %s (compute capability %d.%d)",
        trt.__version__,
        precision,
        onnx_path,
        gpu_name,
        *capability,
    )
    start = time.perf_counter()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}:\n  {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 2**30))
    if precision == "int8":  # explicit quantisation: Q/DQ layers need the INT8 flag; float layers may be FP16
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 is on by default; "fp32" means full FP32 math
    monitor = _progress_monitor(trt)  # must outlive the build
    config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")

    write_atomic(engine_path, bytes(serialized))
    sidecar = {
        "metadata": metadata.to_props(),
        "onnx": str(onnx_path),
        "precision": precision,
        "cache_key": key,
        "gpu": gpu_name,
        "compute_capability": list(capability),
        "tensorrt": trt.__version__,
    }
    write_atomic(engine_sidecar_path(engine_path), json.dumps(sidecar, indent=2).encode("utf-8"))
    logger.info("built %s in %.1f s", engine_path, time.perf_counter() - start)
    return engine_path


def _progress_monitor(trt):
    """A ``trt.IProgressMonitor`` that logs the builder's phases (top-level ones at INFO)."""

    class LogProgress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._started: dict[str, float] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self._started[phase_name] = time.perf_counter()
            level = logging.INFO if parent_phase is None else logging.DEBUG
            logger.log(level, "TensorRT build: %s (%d steps)", phase_name, num_steps)

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            elapsed = time.perf_counter() - self._started.pop(phase_name, time.perf_counter())
            logger.debug("TensorRT build: %s done in %.1f s", phase_name, elapsed)

    return LogProgress()
