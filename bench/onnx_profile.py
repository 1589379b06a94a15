"""Where a depth net's time goes on ONNX Runtime's CPU provider: its own profiler, per op type and per module.

Each ``--model`` (as ``bench/inference.py`` takes it: ``ENCODER+DECODER`` or a training config's path) is
exported with random weights at 640x192 (``--height``/``--width``) and run ``--runs`` times on one session
of ``--threads`` intra-op threads with ``enable_profiling``, after ``--warmup`` runs that are not counted. The
kernel times of the counted runs are summed per op type (``Conv``, ``Pad``, ...; ONNX Runtime's own layout
conversions around its blocked-channel convs are ``ReorderInput`` / ``ReorderOutput``), as ms per frame and
shares of the kernel time, and the ``--top`` costliest nodes are listed with their output shapes (ONNX
Runtime's fused nodes carry no module names, but the shape says which level of the net a node is at).
The first graph (the first model's FP32) is the peer: each graph's heading gives its kernel time and the
peer's divided by it.

With ``--int8`` each model is profiled twice: its FP32 graph and its INT8 graph from ``export.quantize``
(``cpu`` target, as ``training/export.py --int8`` writes it; calibrated on ``--calibration DATA``, by default
two small synthetic drives rendered here, as ``bench/inference.py --int8``). In the INT8 graph ONNX Runtime
fuses each quantised conv with its Q/DQ pairs into ``QLinearConv``; the ``QuantizeLinear`` /
``DequantizeLinear`` left are where the graph goes back to float (ops without an 8-bit kernel).

    .venv/bin/python bench/onnx_profile.py --model mobilenet_v3_large+light \
        --model training/configs/synthetic_cpu_light.yaml
    .venv/bin/python bench/onnx_profile.py --int8 --model resnet18+unet --model mobilenet_v3_large+light
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from inference import calibration_data, model_name, parse_model, random_checkpoint  # bench/: script's folder

from ssim_depth_core.export import export_onnx
from ssim_depth_core.export.quantize import quantize_onnx


def profile_kernels(onnx_path: Path, image: np.ndarray, threads: int, runs: int, warmup: int) -> list[dict]:
    """The kernel events (node, op type, microseconds) of the last ``runs`` of ``warmup + runs`` profiled
    runs of ``onnx_path`` on one session."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(onnx_path.with_suffix(""))
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: image}
    for _ in range(warmup + runs):
        session.run(None, feed)
    with open(session.end_profiling()) as file:
        events = json.load(file)
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    first_timed = run_starts[warmup]
    return [
        {
            "node": e["name"].removesuffix("_kernel_time"),
            "op": e["args"]["op_name"],
            "shape": "x".join(str(d) for d in next(iter(e["args"]["output_type_shape"][0].values()))),
            "us": e["dur"],
        }
        for e in events
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_timed
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        action="append",
        type=parse_model,
        metavar="ENCODER+DECODER|CONFIG.yaml",
        help="a random-init configuration, repeatable (default resnet18+unet; bench/inference.py --help)",
    )
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--runs", type=int, default=20, help="counted runs")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--top", type=int, default=10, help="costliest nodes listed (default 10)")
    parser.add_argument("--int8", action="store_true", help="also profile each model's INT8 (cpu) graph")
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="DATA",
        help="--int8: data to calibrate on (default: two small synthetic drives rendered here)",
    )
    args = parser.parse_args(argv)
    models = args.model or [parse_model("resnet18+unet")]
    image = np.random.default_rng(0).random((1, 3, args.height, args.width), dtype=np.float32)
    print(
        f"# ONNX Runtime {ort.__version__} CPU profile, {args.width}x{args.height}, batch 1, {args.threads} "
        f"thread(s), {args.runs} runs after {args.warmup} warm-up, random init; ms per frame of kernel time"
    )
    peer_us = None
    with tempfile.TemporaryDirectory() as tmp:
        for index, model in enumerate(models):
            folder = Path(tmp) / str(index)
            folder.mkdir()
            checkpoint = random_checkpoint(folder, args.height, args.width, model)
            graphs = {"FP32": export_onnx(checkpoint, folder / "model.onnx")}
            if args.int8:
                graphs["INT8"] = folder / "model.int8.onnx"
                data = calibration_data(args.calibration, tmp, args.width, args.height)
                quantize_onnx(graphs["FP32"], graphs["INT8"], data, progress=False)
            for precision, onnx_path in graphs.items():
                events = profile_kernels(onnx_path, image, args.threads, args.runs, args.warmup)
                peer_us = print_profile(f"{model_name(model)} {precision}", events, peer_us, args)


def print_profile(title: str, events: list[dict], peer_us: float | None, args: argparse.Namespace) -> float:
    """Print one graph's kernel time per op type and its costliest nodes; returns the peer's kernel time
    (this graph's when it is the first)."""
    by_op, by_node = collections.Counter(), collections.Counter()
    for event in events:
        by_op[event["op"]] += event["us"]
        by_node[(event["node"], event["op"], event["shape"])] += event["us"]
    total_us = sum(by_op.values())
    peer_us = peer_us or total_us
    print(
        f"\n## {title}: {total_us / 1e3 / args.runs:.2f} ms kernel time "
        f"({peer_us / total_us:.2f}x the first's)\n\n| op type | ms/frame | share |\n|---|---:|---:|"
    )
    for op, us in by_op.most_common():
        print(f"| {op} | {us / 1e3 / args.runs:.2f} | {us / total_us:.1%} |")
    print("\n| node | op type | output | ms/frame | share |\n|---|---|---|---:|---:|")
    for (node, op, shape), us in by_node.most_common(args.top):
        print(f"| {node} | {op} | {shape} | {us / 1e3 / args.runs:.2f} | {us / total_us:.1%} |")
    return peer_us


if __name__ == "__main__":
    main()
