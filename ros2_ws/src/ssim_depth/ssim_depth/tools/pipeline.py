"""``pipeline``: serve a model on a recorded drive end to end and write what the node publishes to a folder.

The depth node runs as a separate process (as it would on a robot), fed by :func:`ssim_depth.tools.play.play`
replaying the bag once in this process; a :class:`ssim_depth.tools.record.DepthRecorder` in this process
writes depth PNGs, the last point cloud and latency statistics (layout and latency definition in
:mod:`ssim_depth.tools.record`). All of it runs on a random ROS domain with discovery limited to localhost, so
nothing else on the network hears it or disturbs it.

Publishers and subscribers discover each other asynchronously, and DDS drops what a subscriber receives
before it has matched the publisher, so playback is preceded by a warm-up: the bag's first image (and
CameraInfo) with header frame_id ``WARMUP_FRAME_ID`` is re-published every WARMUP_PERIOD until the node's
tag of it (``depth/model``, published for every frame it serves, with or without depth) reaches the
recorder, which proves every connection on the way (and initialises the backend, so the first recorded
frame's latency is not the model's lazy set-up). The recorder does not record warm-up frames.

Output folder: the recorder's files plus ``node.log`` (the node's output) and ``summary.json`` (the dict
:func:`run_pipeline` returns); a folder holding an earlier run's is refused unless ``--overwrite``. A run that
fails before the first frame is recorded leaves only ``node.log`` (for the diagnosis; the next run replaces
it).

    ros2 run ssim_depth pipeline --model depth.onnx --bag BAG --out OUT [--rate R] [--backend B]
        [--scale-source model|camera_height|fixed] [--depth-scale S] [--camera-height M]
        [--camera-pitch RAD] [--camera-roll RAD] [--ground-normal fitted|mounting] [--param name:=value ...]
        [--overwrite] [--image-topic T] [--camera-info-topic T] [--timeout S] [--startup-timeout S]

The scale options set the node's parameters of the same names (unset: the node's defaults, scale source
``model``, which refuses a scale-less model).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.serialization import deserialize_message

import ssim_depth
import ssim_depth_core
from ssim_depth.node import SCALE_PARAMETERS
from ssim_depth.tools.play import MESSAGE_CLASSES, check_positive, play
from ssim_depth.tools.record import RECORDING, DepthRecorder, claim_output
from ssim_depth_core.checkpoint import write_atomic
from ssim_depth_core.data.rosbag import (
    COMPRESSED_TYPE,
    open_reader,
    reader_path,
    select_camera_info_topic,
    select_image_topic,
)
from ssim_depth_core.errors import not_found
from ssim_depth_core.outputs import SetAside, earlier_outputs, remove_outputs
from ssim_depth_core.runtime.frames import SCALE_SOURCES
from ssim_depth_core.runtime.scale import GROUND_NORMALS

logger = logging.getLogger(__name__)

# The node gets SIGTERM when the pipeline dies, even by SIGKILL (Linux's parent-death signal; rclpy shuts
# down cleanly on it once running). The pipeline's pid in PIPELINE_PID_VARIABLE closes the race of a parent
# that died before the call. A pipeline started in the background (`cmd &` in a script) passes SIGINT ignored
# to its children: the node takes Python's usual handlers back, so that no signal is lost while it imports.
PIPELINE_PID_VARIABLE = "SSIM_DEPTH_PIPELINE_PID"
NODE_COMMAND = f"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
if sys.platform == "linux":
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(os.environ["{PIPELINE_PID_VARIABLE}"]):
        sys.exit("pipeline: the pipeline that started this node is gone")
from ssim_depth.node import main
sys.exit(main())
"""
WARMUP_FRAME_ID = "ssim_depth_pipeline_warmup"
WARMUP_PERIOD = 0.5  # seconds between warm-up frames
WARMUP_POINTS_WAIT = 2.0  # seconds a warm-up cloud is awaited after its tag (the node may publish none)
STOP_TIMEOUT = 10.0  # seconds the node gets to exit after SIGINT before it is killed
LOG_TAIL = 4000  # characters of node.log quoted in errors


class PipelineError(RuntimeError):
    """The depth node failed to start or died; the message quotes the end of its log."""


class _Player(Node):
    """The node :func:`play` publishes through. As soon as play has created the publishers of all
    ``topics``, before it publishes anything, calls ``on_ready(publishers)``: the node is started then."""

    def __init__(
        self, topics: Collection[str], on_ready: Callable[[list[Publisher]], None], **kwargs
    ) -> None:
        self._pending, self._made, self._on_ready = set(topics), [], on_ready  # before Node() makes any
        super().__init__("ssim_depth_player", **kwargs)

    def create_publisher(self, *args, **kwargs) -> Publisher:
        publisher = super().create_publisher(*args, **kwargs)
        if publisher.topic_name in self._pending:
            self._pending.remove(publisher.topic_name)
            self._made.append(publisher)
            if not self._pending:
                self._on_ready(self._made)
        return publisher


@contextlib.contextmanager
def _environment(changes: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``changes`` applied, restored afterwards."""
    previous = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _log_tail(path: Path) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return text[-LOG_TAIL:].strip() or "(no output)"


def _stop(process: subprocess.Popen) -> int:
    """SIGINT (a clean rclpy shutdown), then SIGKILL after STOP_TIMEOUT; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.warning("depth node did not stop within %s s of SIGINT; killing it", STOP_TIMEOUT)
            process.kill()
        except BaseException:  # e.g. a second Ctrl-C: never leave the node running
            process.kill()
            process.wait()
            raise
    return process.wait()


def run_pipeline(
    model: str | Path,
    bag: str | Path,
    out_dir: str | Path,
    rate: float = 1.0,
    backend: str = "auto",
    *,
    image_topic: str | None = None,
    camera_info_topic: str | None = None,
    node_params: dict[str, object] | None = None,
    startup_timeout: float = 300.0,
    timeout: float = 60.0,
    overwrite: bool = False,
) -> dict:
    """Serve ``model`` on ``bag`` with the depth node and record its outputs in ``out_dir``.

    Args:
        model: ``.engine``, ``.onnx`` or ``.pt`` file (the node's ``model_path``).
        bag: rosbag2 directory or ``.mcap``/``.db3`` file; played once at ``rate`` times the recorded speed.
        backend: the node's ``backend`` parameter.
        image_topic, camera_info_topic: bag topics to play; default as ``play`` chooses them.
        node_params: further node parameters, name -> value (written after ``-p name:=``, YAML-parsed).
        startup_timeout: seconds for the node to load the model and serve the warm-up frame (a TensorRT
            engine build can take minutes).
        timeout: seconds to wait for the last frame's outputs after playback.
        overwrite: replace an earlier run's outputs in ``out_dir`` (refused otherwise).

    Returns:
        The recorder's summary (:meth:`DepthRecorder.finish`: latency statistics, frame counts, output
        paths) plus ``frames_in_bag``, ``node_exit_code`` and the node log's path; also in summary.json.

    Raises:
        FileNotFoundError: a missing model file.
        ValueError: an unusable bag (names the file and what is wrong), a rate or timeout that is not > 0, or
            an earlier run's outputs in ``out_dir`` without ``overwrite``.
        PipelineError: the node exits early or does not come up in time (quotes its log).
    """
    model, bag, out = Path(model), Path(bag), Path(out_dir)
    for name, value in (("rate", rate), ("startup_timeout", startup_timeout), ("timeout", timeout)):
        check_positive(name, value)
    if not model.is_file():
        raise not_found("model", model)
    reader = open_reader(reader_path(bag))
    try:
        topics = reader.topics
        image_topic = select_image_topic(topics, image_topic, bag, reader)
        camera_info_topic = select_camera_info_topic(topics, camera_info_topic, image_topic, bag)
        frames = topics[image_topic].msgcount
        compressed = topics[image_topic].msgtype == COMPRESSED_TYPE
        names = [name for name in (camera_info_topic, image_topic) if name]  # CameraInfo first
        first = {}
        for connection, _, raw in reader.messages([c for name in names for c in topics[name].connections]):
            first.setdefault(connection.topic, raw)
            if len(first) == len(names):
                break
    finally:
        reader.close()
    if len(first) < len(names):
        raise ValueError(f"{bag}: no messages on {', '.join(set(names) - first.keys())}")
    warmup = []  # (topic, message) in publishing order
    for name in names:
        msg = deserialize_message(bytes(first[name]), MESSAGE_CLASSES[topics[name].msgtype])
        msg.header.frame_id = WARMUP_FRAME_ID
        warmup.append((name, msg))
    outputs = (*RECORDING, "summary.json")
    restored = SetAside.recover(out, outputs)
    if restored:
        logger.warning(
            "%s: put back an earlier recording's %s, set aside by a pipeline that was killed "
            "while its node started",
            out,
            ", ".join(restored),
        )
    # an earlier run's outputs go only once the node has served the warm-up frame: a run that cannot start
    # (a model the node refuses) puts them back
    earlier = SetAside(
        out, earlier_outputs(out, outputs, overwrite, "recording", {"--model": model, "--bag": bag})
    )
    claim_output(out, False, outputs)

    input_name = "image/compressed" if compressed else "image"
    arguments = ["-p", f"model_path:={model.resolve()}", "-p", f"backend:={backend}"]
    arguments += ["-p", f"compressed:={str(compressed).lower()}", "-r", f"{input_name}:={image_topic}"]
    # play publishes reliably; a reliable subscription delivers frames of any size (best effort loses most
    # frames of 1280x720 and more: bench/dds_large_frames.py)
    resolved = image_topic if image_topic.startswith("/") else f"/{image_topic}"
    arguments += ["-p", f"qos_overrides.{resolved}.subscription.reliability:=reliable"]
    if camera_info_topic:
        arguments += ["-r", f"camera_info:={camera_info_topic}"]
    for name, value in (node_params or {}).items():
        arguments += ["-p", f"{name}:={value}"]
    # the packages' parent folders, so that the node finds them however this process found them
    roots = [str(Path(package.__file__).resolve().parents[1]) for package in (ssim_depth, ssim_depth_core)]
    ros = {"ROS_DOMAIN_ID": str(random.randint(1, 100)), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    python_path = os.pathsep.join([*roots, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    node_env = {**os.environ, **ros, "PYTHONPATH": python_path, PIPELINE_PID_VARIABLE: str(os.getpid())}

    log_path = out / "node.log"
    command = [sys.executable, "-c", NODE_COMMAND, "--ros-args", *arguments]
    started: list[subprocess.Popen] = []  # the node process, once started

    def node_failed(what: str) -> PipelineError:
        return PipelineError(f"the depth node {what}; its log ({log_path}) ends:\n{_log_tail(log_path)}")

    def start_node(publishers: list[Publisher]) -> None:
        """Start the node and warm it up through play's publishers (see the module docstring)."""
        process = subprocess.Popen(
            command,
            env=node_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C meant for us reaches the node only through _stop
        )
        started.append(process)
        by_topic = {publisher.topic_name: publisher for publisher in publishers}
        deadline = time.monotonic() + startup_timeout
        while not recorder.wait_for_warmup(("image", "model"), WARMUP_PERIOD):
            if process.poll() is not None:
                raise node_failed(f"exited with code {process.returncode} before serving a warm-up frame")
            if time.monotonic() > deadline:
                raise node_failed(f"served no warm-up frame within {startup_timeout} s")
            for topic, msg in warmup:
                by_topic[topic].publish(msg)
        deadline = time.monotonic() + WARMUP_POINTS_WAIT
        while not recorder.wait_for_warmup(("points",), WARMUP_PERIOD) and time.monotonic() < deadline:
            for topic, msg in warmup:
                by_topic[topic].publish(msg)
        time.sleep(WARMUP_PERIOD)  # the node finishes the warm-up frame (preview, statistics) before frame 0
        earlier.discard()

    try:
        with _environment(ros), open(log_path, "w") as log:
            context = Context()
            rclpy.init(context=context)
            executor = SingleThreadedExecutor(context=context)
            spinner = threading.Thread(target=executor.spin, name="pipeline_executor", daemon=True)
            nodes: list[Node] = []
            exit_code = None
            try:
                recorder = DepthRecorder(
                    out,
                    compressed=compressed,
                    warmup_frame_id=WARMUP_FRAME_ID,
                    context=context,
                    cli_args=["--ros-args", "-r", f"{input_name}:={image_topic}"],
                )
                nodes.append(recorder)
                executor.add_node(recorder)
                spinner.start()
                nodes.append(_Player(names, start_node, context=context))
                play(bag, rate, False, image_topic, camera_info_topic, node=nodes[-1])
                process = started[0]
                if not recorder.wait_until_served(frames, timeout):
                    if process.poll() is not None:
                        raise node_failed(f"exited with code {process.returncode} during playback")
                    logger.warning("the outputs of the last frame did not arrive within %s s", timeout)
                exit_code = _stop(process)
                summary = recorder.finish()
            finally:
                if started and exit_code is None:
                    _stop(started[0])
                executor.shutdown()
                if spinner.is_alive():
                    spinner.join(timeout)
                for node in nodes:
                    node.destroy_node()
                rclpy.try_shutdown(context=context)
    except BaseException:
        if not any((out / "depth").glob("*.png")):  # nothing recorded: only the node's log is worth keeping
            remove_outputs(out, RECORDING)
            earlier.restore()
        raise

    summary.update(frames_in_bag=frames, node_exit_code=exit_code)
    summary["outputs"]["node_log"] = str(log_path)
    summary["outputs"]["summary"] = str(out / "summary.json")
    write_atomic(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    logger.info(
        "%d of %d frames served, latency p50 %s, p95 %s; outputs in %s",
        summary["frames_received"], frames, _format_ms(summary["p50_ms"]), _format_ms(summary["p95_ms"]), out,
    )  # fmt: skip
    return summary


def _format_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    """``ros2 run ssim_depth pipeline`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help=".engine, .onnx or .pt model file")
    parser.add_argument("--bag", type=Path, required=True, help="rosbag2 directory or .mcap/.db3 file")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--backend", default="auto", help="the node's backend parameter")
    parser.add_argument("--image-topic", help="image topic to play (default: the bag's only one)")
    parser.add_argument("--camera-info-topic", help="CameraInfo topic to play (default: the image's)")
    parser.add_argument(
        "--scale-source",
        choices=SCALE_SOURCES,
        help="where metres come from: model (a metric model; the node's default) | camera_height | fixed",
    )
    parser.add_argument("--depth-scale", type=float, help="scale source fixed: the factor on every depth")
    parser.add_argument(
        "--camera-height",
        type=float,
        help="scale source camera_height: the camera's height above the ground (m)",
    )
    parser.add_argument("--camera-pitch", type=float, help="optical axis below the horizontal (rad)")
    parser.add_argument("--camera-roll", type=float, help="roll about the optical axis (rad)")
    parser.add_argument(
        "--ground-normal", choices=GROUND_NORMALS, help="the ground plane's normal: fitted | mounting's up"
    )
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME:=VALUE", help="a further node parameter"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the last frame's outputs after playback (default: 60)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run's outputs in --out")
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=300.0,
        help="seconds for the node to load the model and serve the warm-up frame (a TensorRT engine build "
        "can take minutes) (default: 300)",
    )
    args = parser.parse_args(argv)
    params = {name: getattr(args, name) for name in SCALE_PARAMETERS if getattr(args, name) is not None}
    for item in args.param:
        name, separator, value = item.partition(":=")
        if not separator or not name:
            parser.error(f"--param '{item}': expected NAME:=VALUE")
        params[name] = value
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run_pipeline(
            args.model,
            args.bag,
            args.out,
            args.rate,
            args.backend,
            image_topic=args.image_topic,
            camera_info_topic=args.camera_info_topic,
            node_params=params,
            startup_timeout=args.startup_timeout,
            timeout=args.timeout,
            overwrite=args.overwrite,
        )
    except (ValueError, FileNotFoundError) as error:  # bad input: exit 2, as ssim-depth and play
        parser.exit(2, f"pipeline: {error}\n")
    except OSError as error:  # an output folder it may not write (read-only, full)
        parser.exit(2, f"pipeline: {error.filename or args.out}: {error.strerror or error}\n")
    except PipelineError as error:  # the node failed
        parser.exit(1, f"pipeline: {error}\n")
    except KeyboardInterrupt:  # one line, as ssim-depth
        parser.exit(130, "pipeline: interrupted\n")
    outputs = summary["outputs"]
    print(
        f"frames: {summary['frames_received']} served of {summary['frames_published']} published "
        f"({summary['dropped']} dropped, {summary['withheld']} withheld without a metric scale, "
        f"{summary['frames_in_bag']} in the bag)\n"
        f"latency (image publish -> depth received): p50 {_format_ms(summary['p50_ms'])}, "
        f"p95 {_format_ms(summary['p95_ms'])}, max {_format_ms(summary['max_ms'])}"
    )
    for name, path in outputs.items():
        print(f"  {name:10s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
