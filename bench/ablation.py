"""Ablation studies: variants x training seeds on the same data, paired verdicts against a baseline.

A variant is a name and a list of ``--set`` style config overrides (a variants file maps names to lists, e.g.
``bench/studies/ssim.yaml``). Every (variant, seed) pair trains one recipe (``--config``, ``--steps``) on the
same rendered drives (data seed 1, every drive's frames) and is evaluated with the Eigen protocol on a
held-out drive of an unseen data seed (2). One JSON line per pair is appended to the study's results file
(``docs/studies/<study>.jsonl``) as soon as it is measured; a rerun skips the pairs already there, so a study
accumulates over sittings and machines. The report compares each variant with the baseline on the seeds both
have: paired differences with a percentile-bootstrap 95% interval and a verdict on AbsRel. It is written to
``docs/studies/<study>.md`` and ``.png`` after every run, or alone with ``--report-only`` (trains nothing).
Method, record format and workflow: docs/ablation.md.

    python bench/ablation.py --study ssim --variants-file bench/studies/ssim.yaml --baseline additive \\
        --seeds 0 1 2 --steps 980
    python bench/ablation.py --study ssim --variants-file bench/studies/ssim.yaml --baseline additive \\
        --report-only
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ssim_depth_core.apps.evaluate import evaluate_model
from ssim_depth_core.config import OptimConfig, TrainConfig, config_differences, load_config, to_dict
from ssim_depth_core.data import kitti_layout as kl
from ssim_depth_core.data.sources import open_sequences
from ssim_depth_core.data.synthetic import generate_dataset
from ssim_depth_core.data.triplets import build_samples
from ssim_depth_core.progress import progress_bar
from ssim_depth_core.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "training" / "configs" / "synthetic_cpu.yaml"
TRAIN_DATA_SEED, HELDOUT_DATA_SEED = 1, 2
DATA_MANIFEST = "ablation_data.json"  # written last: its presence says both renders finished
REPORTED = {"abs_rel": "AbsRel", "rmse": "RMSE", "a1": "a1"}  # metric key -> label, in table order
FORMATS = {"abs_rel": ".4f", "rmse": ".3f", "a1": ".4f"}
HIGHER_IS_BETTER = frozenset({"a1"})
VERDICT_METRIC = "abs_rel"
# --metrics auto compares depth in metres only where every model's mean scale ratio is within this factor of 1
METRIC_SCALE_TOLERANCE = 1.5
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # a fixed generator: the same records always give the same intervals
CONFIDENCE = 0.95
EXACT_SIGN_FLIP_MAX_N = 16  # up to 2^16 sign patterns enumerated; beyond, a Monte-Carlo sample
# Config keys that say where, on what or how verbosely a run happens, not what it trains: records that differ
# only in these still belong to one study (the seed is the pair's own; the split path depends on --out).
LOGISTICS_KEYS = frozenset(
    {"seed", "device", "log_every", "preview_every", "checkpoint_every", "data.train_split", "data.val_split"}
)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
log = logging.getLogger("ablation")


@dataclass(frozen=True)
class DataRecipe:
    """A study's rendered data: training drives (data seed 1) and one held-out drive (data seed 2)."""

    drives: int = 10
    frames: int = 100
    width: int = 416
    height: int = 128
    heldout_frames: int = 60

    def manifest(self) -> dict[str, int]:
        return {**asdict(self), "seed": TRAIN_DATA_SEED, "heldout_seed": HELDOUT_DATA_SEED}


# ---------------------------------------------------------------------------------------------- variants


def check_variant(name: Any, overrides: Any, source: str) -> list[str]:
    """A variant's overrides as a list of ``key=value`` strings, checked; ``source`` says where it is from."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"{source}: variant name {name!r} must match {NAME.pattern} (it names run folders)")
    overrides = [] if overrides is None else overrides
    if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise ValueError(
            f"{source}: variant '{name}' must be a list of key=value overrides, got {overrides!r}"
        )
    if any(o.partition("=")[0].strip() == "seed" for o in overrides):
        raise ValueError(f"{source}: variant '{name}' sets seed; training seeds come from --seeds")
    return list(overrides)


def load_variants(path: str | Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """A variants file: a YAML mapping of variant name -> list of ``--set`` style overrides (empty: none), or
    -> ``{init_from: <variant>, overrides: [...]}`` for a run that starts from that variant's trained weights
    of the same seed (a fine-tune). Returns (name -> overrides, fine-tune name -> the variant it starts from).
    """
    loaded = yaml.safe_load(Path(path).read_text())
    if not isinstance(loaded, dict) or not loaded:
        raise ValueError(f"{path}: expected a mapping of variant name -> list of key=value overrides")
    variants, init_from = {}, {}
    for name, entry in loaded.items():
        if isinstance(entry, dict):
            unknown = set(entry) - {"init_from", "overrides"}
            if unknown or not isinstance(entry.get("init_from"), str):
                raise ValueError(
                    f"{path}: variant '{name}' as a mapping takes init_from (a variant name) and overrides, "
                    f"got {sorted(entry)}"
                )
            init_from[name] = entry["init_from"]
            entry = entry.get("overrides")
        variants[name] = check_variant(name, entry, str(path))
    check_init_from(variants, init_from, str(path))
    return variants, init_from


def check_init_from(
    variants: dict[str, list[str]],
    init_from: dict[str, str],
    source: str,
    recorded: AbstractSet[str] = frozenset(),
) -> None:
    """Each fine-tune is a variant of the study and starts from another variant, of the study or among the
    ``recorded`` ones, that is not a fine-tune itself."""
    for name, start in init_from.items():
        if name not in variants:
            raise ValueError(f"{source}: fine-tune '{name}' is not among the variants")
        if start == name or start not in variants.keys() | recorded:
            raise ValueError(
                f"{source}: variant '{name}' starts from '{start}', which is not another variant of the study"
            )
        if start in init_from:
            raise ValueError(
                f"{source}: variant '{name}' starts from '{start}', a fine-tune itself: chains are not "
                "supported"
            )


# ------------------------------------------------------------------------------------------ data, recipe


def prepare_data(out: Path, recipe: DataRecipe) -> tuple[Path, Path, Path]:
    """Render the training drives with a split of every drive's frames, and the held-out drive, once.

    Returns (data root, its split file, held-out root). Data already there must be of the same ``recipe``.
    """
    data, heldout = out / "data", out / "heldout"
    manifest = data / DATA_MANIFEST
    split = data / "splits" / "ablation" / "train_files.txt"
    if manifest.is_file():
        found = json.loads(manifest.read_text())
        if found != recipe.manifest():
            raise ValueError(
                f"{data} holds data of another recipe ({found}); this run asks for {recipe.manifest()}: "
                "choose another --out or remove that folder"
            )
        return data, split, heldout
    for folder in (data, heldout):
        if folder.exists() and any(folder.iterdir()):
            raise ValueError(
                f"{folder} is not empty but has no {manifest} (an interrupted render, or another tool's "
                "data): remove it or choose another --out"
            )
    log.info("rendering %d drives x %d frames (data seed %d)", recipe.drives, recipe.frames, TRAIN_DATA_SEED)
    size = {"width": recipe.width, "height": recipe.height}
    generate_dataset(
        data, seed=TRAIN_DATA_SEED, drives=recipe.drives, frames=recipe.frames, bag="none", **size
    )
    drive_dirs = sorted(p for p in data.glob("*/*_sync") if p.is_dir())
    kl.write_split(
        split, [(f"{d.parent.name}/{d.name}", i) for d in drive_dirs for i in range(1, recipe.frames - 1)]
    )
    log.info("rendering the held-out drive (data seed %d)", HELDOUT_DATA_SEED)
    generate_dataset(
        heldout, seed=HELDOUT_DATA_SEED, drives=1, frames=recipe.heldout_frames, bag="none", **size
    )
    manifest.write_text(json.dumps(recipe.manifest()) + "\n")
    return data, split, heldout


def steps_per_epoch(config: TrainConfig, data: Path, split: Path) -> int:
    """Optimiser steps in one epoch of ``config`` on ``split`` (one process, no partial batch)."""
    samples = build_samples(open_sequences(data, config.data), config.data.frame_ids, split)
    return len(samples) // config.optim.batch_size


def study_schedule(optim: OptimConfig, epoch_steps: int, steps: int) -> tuple[int, dict[str, int]]:
    """The budget in steps and the ``optim`` overrides that fit the recipe's schedule into it.

    ``steps`` 0 keeps the recipe's own schedule (its epochs, or its ``max_steps``). Otherwise the run stops
    after ``steps`` (``optim.max_steps``) and ``optim.epochs`` becomes the epochs those steps start, so that
    the schedule ends with the run. The recipe schedules in whole epochs; cut by ``max_steps`` alone, a short
    run would never reach the learning-rate drop of the recipe (after 9 of 10 epochs in synthetic_cpu.yaml).
    For the ``step`` schedule the drop moves to the epoch boundary nearest to the recipe's fraction of the
    run (9/10) that lies inside the run, at least one epoch before its end: with 245-step epochs, 980 steps
    drop after 3 epochs (the last quarter at the low rate), 2,450 steps after 9 as the recipe does.
    A run shorter than two epochs has no such boundary and keeps the initial rate (a warning says so).
    """
    full = optim.epochs * epoch_steps
    if steps <= 0:
        return (min(optim.max_steps, full) if optim.max_steps > 0 else full), {}
    epochs = math.ceil(steps / epoch_steps)
    schedule = {"optim.max_steps": steps, "optim.epochs": epochs}
    if optim.lr_schedule == "step":
        if epochs < 2:
            log.warning(
                "%d steps are within one epoch (%d steps): no epoch boundary for the learning-rate drop; "
                "the run keeps the initial rate",
                steps,
                epoch_steps,
            )
            schedule["optim.lr_step_epochs"] = epochs
        else:
            nearest = round(optim.lr_step_epochs / optim.epochs * steps / epoch_steps)
            schedule["optim.lr_step_epochs"] = min(max(nearest, 1), epochs - 1)  # inside the run
    elif steps % epoch_steps:
        log.warning(
            "%d steps are not whole epochs of %d: the %s schedule is cut before its end",
            steps,
            epoch_steps,
            optim.lr_schedule,
        )
    return steps, schedule


@dataclass
class VariantPlan:
    """How one variant trains: its overrides without the seed, the budget in steps and the schedule."""

    name: str
    overrides: list[str]
    train_overrides: list[str]
    steps: int
    schedule: dict[str, int]
    train_config: dict[str, Any]
    init_from: str = ""  # the variant whose weights (same seed) this one starts from; "": random init


def compose_overrides(
    schedule: dict[str, Any], common: list[str], overrides: list[str], location: Sequence[str] = ()
) -> list[str]:
    """A run's overrides in the order that decides: where it trains, the study's schedule, ``--set``, then the
    variant's own (last, so a variant may set its own ``optim`` values)."""
    return [*location, *(f"{k}={v}" for k, v in schedule.items()), *common, *overrides]


def plan_variant(
    name: str,
    overrides: list[str],
    common: list[str],
    config_path: Path,
    data: Path,
    split: Path,
    steps: int,
    init_from: str = "",
) -> VariantPlan:
    """Resolve a variant's training overrides (:func:`compose_overrides`): the split, no validation, the
    schedule, shared ``common`` overrides, then the variant's own."""
    location = [f"data.train_split={split}", "data.val_split=none"]
    config = load_config(config_path, [*location, *common, *overrides])
    epoch_steps = steps_per_epoch(config, data, split)
    if epoch_steps == 0:
        raise ValueError(f"variant '{name}': {split} holds fewer samples than one batch")
    budget, schedule = study_schedule(config.optim, epoch_steps, steps)
    train_overrides = compose_overrides(schedule, common, overrides, location)
    train_config = to_dict(load_config(config_path, train_overrides))
    return VariantPlan(name, list(overrides), train_overrides, budget, schedule, train_config, init_from)


# --------------------------------------------------------------------------------------------- records


def read_records(results: Path) -> list[dict]:
    """The records of a results file (none when it does not exist)."""
    if not results.is_file():
        return []
    records = []
    for number, line in enumerate(results.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{results}:{number}: not a JSON record ({error})") from None
    return records


def append_record(results: Path, record: dict) -> None:
    """Append one JSON line and flush it to disk (a study killed later keeps every measured pair)."""
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("ab+") as stream:
        stream.seek(0, os.SEEK_END)
        if stream.tell():  # a file edited by hand may lack its last newline
            stream.seek(-1, os.SEEK_END)
            if stream.read(1) != b"\n":
                stream.write(b"\n")
        stream.write((json.dumps(record) + "\n").encode())
        stream.flush()
        os.fsync(stream.fileno())


def _identity(record: dict) -> dict[str, Any]:
    """What must match for two records of one variant to belong to one study."""
    identity = {key: record.get(key) for key in ("overrides", "common_overrides", "steps", "config", "data")}
    return {**identity, "init_from": record.get("init_from", "")}


def check_same_setup(records: list[dict], variant: str, reference: dict, results: Path) -> None:
    """Raise when a record of ``variant`` was measured with another setup than ``reference`` (a record or a
    planned one): records of one variant name are never mixed across overrides, budgets, configs or data."""
    for record in records:
        if record["variant"] != variant:
            continue
        old, new = _identity(record), _identity(reference)
        differences = [f"{k}: {old[k]!r} -> {new[k]!r}" for k in old if old[k] != new[k]]
        differences += config_differences(record["train_config"], reference["train_config"], LOGISTICS_KEYS)
        if differences:
            raise ValueError(
                f"{results}: variant '{variant}' (seed {record['seed']}) was measured with another setup: "
                f"{'; '.join(differences)}. Give the changed variant a new name, or use another --results "
                "file: a study never mixes setups under one name"
            )


def _display_path(path: Path) -> str:
    """``path`` relative to the repository when inside it (records compare across checkouts)."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path.resolve())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Where a record was measured: OS, CPU model and count, torch version."""
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
    }


def git_commit() -> str:
    """``git rev-parse HEAD``, with ``-dirty`` when the working tree has changes (tracked or not) outside
    docs/studies/, where the studies' own records and reports grow while they run.

    Outside a git checkout (a copy of the tree sent to another machine) it is what ``SSIM_DEPTH_GIT_COMMIT``
    says the copy was made from, else "unknown"."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--", ".", ":(exclude)docs/studies"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("SSIM_DEPTH_GIT_COMMIT", "unknown")
    return head + ("-dirty" if status.strip() else "")


# ------------------------------------------------------------------------------------------- training


def run_folder(out: Path, variant: str, seed: int) -> Path:
    """Where a study keeps the run of one (variant, seed) pair."""
    return out / "runs" / f"{variant}_s{seed}"


def train_pair(
    config: TrainConfig, data: Path, run_dir: Path, init_from: Path | None = None
) -> dict[str, Any]:
    """Train one pair in ``run_dir``, resuming its ``checkpoints/last.pt``, else starting from the weights of
    checkpoint ``init_from`` when given; returns timing and device."""
    saved = run_dir / "config.yaml"
    if saved.is_file():
        differences = config_differences(
            yaml.safe_load(saved.read_text()), to_dict(config), ignore=LOGISTICS_KEYS - {"seed"}
        )
        if differences:
            raise ValueError(
                f"{run_dir} holds a run of another configuration ({'; '.join(differences)}): remove it to "
                "train this pair anew"
            )
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    overwrite = not resume and run_dir.is_dir() and any(run_dir.iterdir())  # nothing there to continue
    tic = time.perf_counter()
    trainer = Trainer(config, data, run_dir, resume=resume, overwrite=overwrite, init_from=init_from or "")
    resumed_from = trainer.step
    trainer.fit()
    minutes = (time.perf_counter() - tic) / 60
    device = str(trainer.device)
    if trainer.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(trainer.device)})"
    return {
        "train_minutes": round(minutes, 3),
        "resumed_from_step": resumed_from,
        "trained_steps": trainer.step,
        "device": device,
    }


@dataclass(frozen=True)
class PairSetting:
    """What every pair of one study run shares: where data, runs and configs are, and how it was called."""

    study: str
    config_path: Path
    config_name: str
    common: list[str]
    recipe: DataRecipe
    data: Path
    heldout: Path
    out: Path
    command: str


def _init_worker(threads: int) -> None:
    """A worker process of ``--jobs``: its share of the CPU threads, log lines as the parent's, and an exit
    when the parent dies (a killed study must not leave workers training into its run folders)."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    threading.Thread(target=_exit_with_parent, name="exit-with-parent", daemon=True).start()


def _exit_with_parent() -> None:
    """Block until the parent process is gone, then end this worker at once (its pair resumes on a rerun)."""
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    log.warning("the study's process is gone: worker %d stops", os.getpid())
    os._exit(1)


def measure_pair(setting: PairSetting, plan: VariantPlan, seed: int) -> dict[str, Any]:
    """Train (or resume) one (variant, seed) pair and evaluate its ``best.pt``: the pair's record."""
    config = load_config(setting.config_path, [*plan.train_overrides, f"seed={seed}"])
    run_dir = run_folder(setting.out, plan.name, seed)
    init = None
    if plan.init_from:
        init = run_folder(setting.out, plan.init_from, seed) / "checkpoints" / "best.pt"
        if not init.is_file():
            raise FileNotFoundError(
                f"{plan.name} seed {seed} starts from {init}, which is missing: {plan.init_from}'s run of "
                f"seed {seed} is recorded elsewhere or its folder was removed; train that pair here first"
            )
    log.info("%s seed %d: training in %s", plan.name, seed, run_dir)
    facts = train_pair(config, setting.data, run_dir, init)
    if facts["trained_steps"] != plan.steps:
        log.warning(
            "%s seed %d: trained %d steps, planned %d", plan.name, seed, facts["trained_steps"], plan.steps
        )
    tic = time.perf_counter()
    evaluation = evaluate_model(
        run_dir / "checkpoints" / "best.pt", setting.heldout, "test", backend="torch", progress=False
    )
    basis = "metric" if "metric" in evaluation else "median"
    log.info(
        "%s seed %d: AbsRel %.4f (%s), %.1f train minutes",
        plan.name,
        seed,
        evaluation[basis]["abs_rel"],
        basis,
        facts["train_minutes"],
    )
    return {
        "study": setting.study,
        "variant": plan.name,
        "overrides": plan.overrides,
        "init_from": plan.init_from,
        "common_overrides": setting.common,
        "seed": seed,
        "steps": plan.steps,
        "config": setting.config_name,
        "data": setting.recipe.manifest(),
        "schedule": plan.schedule,
        **facts,
        "eval_minutes": round((time.perf_counter() - tic) / 60, 3),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "git_commit": git_commit(),
        "command": setting.command,
        "train_config": to_dict(config),
        "evaluation": evaluation,
    }


def run_study(
    study: str,
    variants: dict[str, list[str]],
    seeds: list[int],
    baseline: str,
    results: Path,
    out: Path,
    config_path: Path = DEFAULT_CONFIG,
    steps: int = 0,
    common: list[str] | None = None,
    recipe: DataRecipe | None = None,
    command: str = "",
    jobs: int = 1,
    init_from: dict[str, str] | None = None,
) -> list[dict]:
    """Train and evaluate every (variant, seed) pair not yet in ``results``; returns all its records.

    Pairs run seed by seed (every variant of the first seed, then of the next), so that a study cut short
    still holds paired comparisons; the fine-tunes of ``init_from`` (variant -> the variant whose weights of
    the same seed it starts from) run after the others. Run folders are ``out/runs/<variant>_s<seed>``; a
    pair's ``last.pt`` is removed once its record is written (``best.pt``, the weights evaluated, stays).
    ``jobs`` > 1 trains that many pairs at once in worker processes (a GPU with spare capacity; each worker
    gets an equal share of the CPU threads), started in the same order; each record is appended as its pair
    finishes.
    """
    common, recipe, init_from = list(common or []), recipe or DataRecipe(), dict(init_from or {})
    records = read_records(results)
    check_init_from(variants, init_from, "init_from", {r["variant"] for r in records})
    if baseline not in variants and not any(r["variant"] == baseline for r in records):
        raise ValueError(f"baseline '{baseline}' is neither among the variants nor recorded in {results}")
    for overrides in variants.values():  # a typo fails now, not hours into a study
        load_config(config_path, [*common, *overrides])
    data, split, heldout = prepare_data(out, recipe)
    config_name = _display_path(config_path)
    plans = {}
    for name, overrides in variants.items():
        plan = plan_variant(name, overrides, common, config_path, data, split, steps, init_from.get(name, ""))
        reference = {
            "overrides": plan.overrides,
            "init_from": plan.init_from,
            "common_overrides": common,
            "steps": plan.steps,
            "config": config_name,
            "data": recipe.manifest(),
            "train_config": plan.train_config,
        }
        check_same_setup(records, name, reference, results)
        plans[name] = plan
    done = {(r["variant"], r["seed"]) for r in records}
    todo = [(name, seed) for seed in seeds for name in variants if (name, seed) not in done]
    for name, seed in todo:
        start = init_from.get(name)
        if start and (start, seed) not in done and start not in variants:
            raise ValueError(
                f"variant '{name}' starts from '{start}' of seed {seed}: add '{start}' to the run"
            )
    log.info(
        "study %s: %d pairs to train, %d of %d already in %s",
        study,
        len(todo),
        len(seeds) * len(variants) - len(todo),
        len(seeds) * len(variants),
        results,
    )
    for name, plan in plans.items():
        log.info("%s: %d steps, schedule %s, overrides %s", name, plan.steps, plan.schedule, plan.overrides)
    setting = PairSetting(study, config_path, config_name, common, recipe, data, heldout, out, command)
    waves = [
        [(setting, plans[name], seed) for name, seed in todo if bool(plans[name].init_from) == fine_tunes]
        for fine_tunes in (False, True)
    ]
    with progress_bar(total=len(todo), desc=f"study {study}", unit="run") as bar:
        for pairs in waves:
            for record in measure_pairs(pairs, jobs):
                append_record(results, record)
                checkpoints = run_folder(out, record["variant"], record["seed"]) / "checkpoints"
                (checkpoints / "last.pt").unlink(missing_ok=True)
                bar.update()
    return read_records(results)


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes, each with an equal share of the CPU threads."""
    return ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(max(1, (os.cpu_count() or 1) // jobs),),
    )


def measure_pairs(pairs: list[tuple[PairSetting, VariantPlan, int]], jobs: int):
    """Yield the record of each pair as it is measured: in this process, or ``jobs`` worker processes."""
    if jobs <= 1 or not pairs:
        yield from (measure_pair(*pair) for pair in pairs)
        return
    pool = worker_pool(jobs)
    try:
        yield from (
            future.result() for future in as_completed([pool.submit(measure_pair, *p) for p in pairs])
        )
    finally:
        pool.shutdown(cancel_futures=True)


# ----------------------------------------------------------------------------------------- statistics


def bootstrap_interval(
    values: list[float] | np.ndarray,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean: ``resamples`` draws of len(values) values with replacement,
    the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of their means."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def sign_flip_p(differences: list[float] | np.ndarray, seed: int = BOOTSTRAP_SEED) -> float:
    """Two-sided p-value of the paired sign-flip (randomisation) test of mean difference 0: the share of
    sign patterns whose |mean| reaches the observed one; exact up to 16 pairs. It cannot go below 2 / 2^n."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        return math.nan
    if d.size <= EXACT_SIGN_FLIP_MAX_N:
        signs = 1 - 2 * ((np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1, 1], size=(100_000, d.size))
    observed = abs(d.mean())
    flipped = np.abs((signs * d).mean(axis=1))
    return float(np.mean(flipped >= observed - 1e-12 * max(observed, 1e-12)))


@dataclass
class Comparison:
    """A variant minus the baseline on their common seeds, for one metric."""

    seeds: list[int]
    differences: list[float]
    mean: float
    low: float
    high: float
    sign_flip_p: float

    @property
    def n(self) -> int:
        return len(self.seeds)


def compare(variant: dict[int, float], baseline: dict[int, float]) -> Comparison:
    """Paired differences (variant - baseline) on the seeds both have, with their bootstrap interval."""
    seeds = sorted(set(variant) & set(baseline))
    differences = [variant[s] - baseline[s] for s in seeds]
    if not seeds:
        return Comparison([], [], math.nan, math.nan, math.nan, math.nan)
    low, high = bootstrap_interval(differences)
    return Comparison(seeds, differences, float(np.mean(differences)), low, high, sign_flip_p(differences))


def verdict(comparison: Comparison, higher_is_better: bool = False) -> str:
    """better / worse when the interval excludes 0 on that side, else no detectable difference; fewer than
    two paired seeds decide nothing."""
    if comparison.n < 2:
        return "undecided (n < 2)"
    if comparison.high < 0:
        return "worse" if higher_is_better else "better"
    if comparison.low > 0:
        return "better" if higher_is_better else "worse"
    return "no detectable difference"


@dataclass
class VariantSummary:
    """One variant's records reduced: per-seed values of the reported metrics and the comparisons."""

    name: str
    overrides: list[str]
    values: dict[str, dict[int, float]]  # metric -> seed -> value
    minutes: list[float]  # training minutes of the runs trained in one sitting
    comparisons: dict[str, Comparison] = field(default_factory=dict)  # empty for the baseline
    verdict: str = "baseline"
    init_from: str = ""  # a fine-tune: the variant whose weights it starts from

    @property
    def seeds(self) -> list[int]:
        return sorted(self.values[VERDICT_METRIC])


def off_scale_variants(records: list[dict]) -> list[str]:
    """Variants with a metric record whose mean scale ratio median(gt) / median(pred) is off by more than
    ``METRIC_SCALE_TOLERANCE`` either way: trained for metres (velocity, stereo) but not there yet."""
    return sorted(
        {
            r["variant"]
            for r in records
            if "metric" in r["evaluation"]
            and not 1 / METRIC_SCALE_TOLERANCE <= r["evaluation"]["scale_mean"] <= METRIC_SCALE_TOLERANCE
        }
    )


def metric_basis(records: list[dict], requested: str = "auto") -> str:
    """Which metrics a report compares: "metric" (no scaling) or "median" (median-scaled). ``auto``: metric
    when every record is of a metric model whose depth is in metres (:func:`off_scale_variants`), else
    median-scaled for all (one footing for every variant)."""
    if requested not in ("auto", "metric", "median"):
        raise ValueError(f"metrics must be auto, metric or median, got {requested!r}")
    metric = all("metric" in r["evaluation"] for r in records)
    if requested == "metric" and not metric:
        scale_less = sorted({r["variant"] for r in records if "metric" not in r["evaluation"]})
        raise ValueError(f"--metrics metric: variants {', '.join(scale_less)} have scale-less records")
    if requested == "auto":
        metric = metric and not off_scale_variants(records)
    return "median" if requested == "median" or not metric else "metric"


def summarize(
    records: list[dict], baseline: str, basis: str, order: list[str] | None = None
) -> list[VariantSummary]:
    """Per variant (``order`` first, then in order of appearance) its values and its paired comparisons."""
    names = [n for n in (order or []) if any(r["variant"] == n for r in records)]
    names += [n for n in dict.fromkeys(r["variant"] for r in records) if n not in names]
    if baseline not in names:
        raise ValueError(f"baseline '{baseline}' has no records")
    summaries = {}
    for name in names:
        runs = [r for r in records if r["variant"] == name]
        for other in runs[1:]:
            check_same_setup([other], name, runs[0], Path("the records"))
        seeds = [r["seed"] for r in runs]
        duplicated = sorted({s for s in seeds if seeds.count(s) > 1})
        if duplicated:
            raise ValueError(f"variant '{name}' has more than one record of seed(s) {duplicated}: keep one")
        values = {m: {r["seed"]: r["evaluation"][basis][m] for r in runs} for m in REPORTED}
        minutes = [r["train_minutes"] for r in runs if r.get("resumed_from_step") == 0]
        summaries[name] = VariantSummary(
            name, runs[0]["overrides"], values, minutes, init_from=runs[0].get("init_from", "")
        )
    reference = summaries[baseline]
    for summary in summaries.values():
        if summary.name == baseline:
            continue
        summary.comparisons = {m: compare(summary.values[m], reference.values[m]) for m in REPORTED}
        summary.verdict = verdict(summary.comparisons[VERDICT_METRIC], VERDICT_METRIC in HIGHER_IS_BETTER)
    return list(summaries.values())


# -------------------------------------------------------------------------------------------- report


def _mean_std(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{np.mean(values):{fmt}} ± {np.std(values, ddof=1):{fmt}}"


def _difference(comparison: Comparison | None, fmt: str) -> str:
    if comparison is None:
        return "-"
    if comparison.n == 0:
        return "no common seed"
    if comparison.n == 1:
        return f"{comparison.mean:+{fmt}} (one seed)"
    return f"{comparison.mean:+{fmt}} [{comparison.low:+{fmt}}, {comparison.high:+{fmt}}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(
    study: str,
    records: list[dict],
    summaries: list[VariantSummary],
    baseline: str,
    basis: str,
    command: str,
    figure: str,
) -> str:
    """The study's page: setup, the table, per-seed AbsRel, the figure, the method and the command."""
    first = records[0]
    data = first["data"]
    steps = sorted({r["steps"] for r in records})
    configs = sorted({r["config"] for r in records})
    commons = sorted({" ".join(r["common_overrides"]) for r in records})
    machines = sorted({f"{r['machine']['cpu']} ({r['device']})" for r in records})
    commits = sorted(
        {r["git_commit"][:12] + ("-dirty" if r["git_commit"].endswith("-dirty") else "") for r in records}
    )
    dates = sorted({r["date"][:10] for r in records})
    schedules = sorted({" ".join(f"{k}={v}" for k, v in r["schedule"].items()) for r in records})
    images = sorted({r["evaluation"]["images"] for r in records})
    basis_text = (
        "without scaling (every record is of a metric model)"
        if basis == "metric"
        else "median-scaled (per image, median(gt) / median(pred))"
    )
    if off_scale := off_scale_variants(records):
        basis_text += (
            f"; trained for metres but not there (mean scale ratio beyond {METRIC_SCALE_TOLERANCE}x either "
            f"way): {', '.join(off_scale)}"
        )
    lines = [
        f"# Ablation study `{study}`",
        "",
        f"Written by `bench/ablation.py` from {len(records)} records; the method is in "
        "[docs/ablation.md](../ablation.md).",
        "",
        f"- Recipe: {', '.join(f'`{c}`' for c in configs)}, {' / '.join(map(str, steps))} steps per run "
        f"(schedule: {', '.join(f'`{c}`' if c else 'the config' for c in schedules)}), shared overrides: "
        f"{', '.join(f'`{c}`' for c in commons if c) or 'none'}",
        f"- Data: {data['drives']} drives x {data['frames']} frames at {data['width']}x{data['height']} "
        f"(data seed {data['seed']}); evaluated with the Eigen protocol on a held-out drive of data seed "
        f"{data['heldout_seed']} ({'/'.join(map(str, images))} images)",
        f"- Metrics: {basis_text}; baseline `{baseline}`; verdict on AbsRel (lower is better)",
        f"- Measured {' to '.join(dict.fromkeys([dates[0], dates[-1]]))} on {'; '.join(machines)}; "
        f"commits {', '.join(commits)}",
        "",
        "| variant | overrides | n | "
        + " | ".join(REPORTED.values())
        + " | train min | "
        + " | ".join(f"Δ{label} [95% CI]" for label in REPORTED.values())
        + " | paired n | sign-flip p | verdict |",
        "|---|---|---:|" + "---:|" * len(REPORTED) + "---:|" + "---:|" * len(REPORTED) + "---:|---:|---|",
    ]
    for s in summaries:
        overrides = ", ".join(f"`{o}`" for o in s.overrides) or "(recipe)"
        if s.init_from:
            overrides = f"from `{s.init_from}`'s weights (same seed): {overrides}"
        means = [_mean_std(list(s.values[m].values()), FORMATS[m]) for m in REPORTED]
        span = sorted({f"{min(s.minutes):.1f}", f"{max(s.minutes):.1f}"}, key=float) if s.minutes else ["-"]
        minutes = "-".join(span)
        differences = [_difference(s.comparisons.get(m), FORMATS[m]) for m in REPORTED]
        head = s.comparisons.get(VERDICT_METRIC)
        paired = str(head.n) if head else "-"
        p = f"{head.sign_flip_p:.3f}" if head and head.n > 1 else "-"
        row = [s.name, overrides, str(len(s.seeds)), *means, minutes, *differences, paired, p, s.verdict]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    seeds = sorted({seed for s in summaries for seed in s.seeds})
    lines += [
        "",
        f"AbsRel per training seed ({basis}):",
        "",
        "| variant | " + " | ".join(f"seed {seed}" for seed in seeds) + " |",
        "|---|" + "---:|" * len(seeds),
    ]
    for s in summaries:
        cells = [format(s.values[VERDICT_METRIC][seed], ".4f") if seed in s.seeds else "-" for seed in seeds]
        lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"![{study}: per-seed values and paired differences]({figure})",
        "",
        "Values: mean ± sample standard deviation over training seeds. Δ: the mean of the paired differences "
        "(variant - baseline, on the seeds both have) with a percentile-bootstrap 95% interval (the seeds "
        f"resampled with replacement, {RESAMPLES:,} resamples, generator seed {BOOTSTRAP_SEED}). Verdict: "
        "better / worse when the AbsRel interval excludes 0, no detectable difference when it holds 0, "
        "undecided with fewer than 2 paired seeds. The sign-flip p (exact paired randomisation test) shows "
        "how much a few seeds can say: it is at least 2 / 2^n, and with n < 6 the bootstrap interval "
        "excludes 0 whenever all differences share a sign.",
        "",
        "Command:",
        "",
        f"    {command}",
        "",
    ]
    return "\n".join(lines)


def _spread(count: int) -> np.ndarray:
    """Horizontal offsets that keep a variant's per-seed points apart."""
    return np.linspace(-0.15, 0.15, count) if count > 1 else np.zeros(count)


def plot(summaries: list[VariantSummary], baseline: str, basis: str, path: Path, title: str) -> None:
    """Per metric: each variant's per-seed values and mean with its bootstrap interval (left); each variant's
    paired differences to the baseline, mean and interval, coloured by the verdict's rule (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compared = [s for s in summaries if s.comparisons]
    fig, axes = plt.subplots(
        len(REPORTED), 2, figsize=(max(8.0, 1.1 * len(summaries) + 5), 3.0 * len(REPORTED))
    )
    axes = np.atleast_2d(axes)
    for row, (metric, label) in enumerate(REPORTED.items()):
        left, right = axes[row]
        for x, s in enumerate(summaries):
            values = [s.values[metric][seed] for seed in s.seeds]
            left.scatter(x + _spread(len(values)), values, s=12, color="0.55", zorder=2)
            mean = float(np.mean(values))
            low, high = bootstrap_interval(values) if len(values) > 1 else (mean, mean)
            left.errorbar(
                x, mean, yerr=[[mean - low], [high - mean]], fmt="o", color="C0", capsize=4, zorder=3
            )
        left.set_xticks(range(len(summaries)), [s.name for s in summaries], rotation=30, ha="right")
        left.set_ylabel(f"{label} ({basis})")
        for x, s in enumerate(compared):
            c = s.comparisons[metric]
            if not c.n:
                continue
            better = (c.low > 0) if metric in HIGHER_IS_BETTER else (c.high < 0)
            worse = (c.high < 0) if metric in HIGHER_IS_BETTER else (c.low > 0)
            colour = "0.4" if c.n < 2 else "tab:green" if better else "tab:red" if worse else "C0"
            right.scatter(x + _spread(c.n), c.differences, s=12, color="0.55", zorder=2)
            right.errorbar(
                x,
                c.mean,
                yerr=[[c.mean - c.low], [c.high - c.mean]],
                fmt="o",
                color=colour,
                capsize=4,
                zorder=3,
            )
        right.axhline(0.0, color="0.3", linewidth=0.8)
        right.set_xticks(range(len(compared)), [s.name for s in compared], rotation=30, ha="right")
        right.set_ylabel(f"Δ{label} vs {baseline}")
    axes[0][0].set_title("per seed (grey), mean with 95% bootstrap interval")
    axes[0][1].set_title("paired difference: green better, red worse, blue neither, grey n < 2")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    study: str,
    records: list[dict],
    baseline: str,
    results: Path,
    command: str,
    metrics: str = "auto",
    order: list[str] | None = None,
) -> tuple[Path, Path]:
    """Write ``<results>.md`` and ``<results>.png`` (beside the results file) from ``records``."""
    if not records:
        raise ValueError(f"{results}: no records to report")
    basis = metric_basis(records, metrics)
    summaries = summarize(records, baseline, basis, order)
    markdown, figure = results.with_suffix(".md"), results.with_suffix(".png")
    plot(summaries, baseline, basis, figure, f"{study}: {len(records)} runs, baseline {baseline} ({basis})")
    markdown.write_text(render_markdown(study, records, summaries, baseline, basis, command, figure.name))
    log.info("wrote %s and %s", markdown, figure)
    return markdown, figure


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Ablation study: variants x training seeds, paired bootstrap verdicts against a baseline "
        "(docs/ablation.md)."
    )
    parser.add_argument("--study", required=True, help="study name: default results, run and report paths")
    parser.add_argument("--variants-file", type=Path, help="YAML mapping: variant name -> list of overrides")
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        metavar=("NAME", "OVERRIDE"),
        help="a variant given inline: its name, then its key=value overrides (repeatable)",
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="train only these variants of the file")
    parser.add_argument("--seeds", nargs="+", type=int, help="training seeds (required unless --report-only)")
    parser.add_argument("--baseline", required=True, help="the variant every other is compared with")
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="the recipe's training config (default: training/configs/synthetic_cpu.yaml)",
    )
    parser.add_argument(
        "--set",
        dest="common",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for every variant",
    )
    parser.add_argument(
        "--steps", type=int, default=0, help="steps per run; 0: the config's own schedule (default: 0)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="pairs trained at once, each in its own process (default: 1; more pays off on a GPU)",
    )
    parser.add_argument("--out", type=Path, help="data and run folders (default: runs/ablation/STUDY)")
    parser.add_argument("--results", type=Path, help="JSON-lines results (default: docs/studies/STUDY.jsonl)")
    parser.add_argument(
        "--drives",
        type=int,
        default=DataRecipe.drives,
        help="training drives to render (default: %(default)s)",
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=DataRecipe.frames,
        help="frames per training drive (default: %(default)s)",
    )
    parser.add_argument(
        "--metrics",
        choices=("auto", "metric", "median"),
        default="auto",
        help="auto (default): without scaling when every record is of a metric model with a mean scale ratio "
        f"within {METRIC_SCALE_TOLERANCE}x of 1, else median-scaled",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="write the report of --results; train nothing"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # as the Trainer does, but before the rendering starts torch's thread pool, whose threads inherit it
    torch.set_flush_denormal(True)
    if not NAME.fullmatch(args.study):
        parser.error(f"--study {args.study!r} must match {NAME.pattern}")
    variants, init_from = load_variants(args.variants_file) if args.variants_file else ({}, {})
    for name, *overrides in args.variant or []:
        if name in variants:
            parser.error(f"variant '{name}' is given twice")
        variants[name] = check_variant(name, overrides, "--variant")
    order = list(variants)
    if args.only:
        unknown = [name for name in args.only if name not in variants]
        if unknown:
            parser.error(f"--only: no variant(s) {', '.join(unknown)} among {', '.join(variants)}")
        variants = {name: variants[name] for name in args.only}
        init_from = {name: start for name, start in init_from.items() if name in variants}
    results = args.results or ROOT / "docs" / "studies" / f"{args.study}.jsonl"
    out = args.out or ROOT / "runs" / "ablation" / args.study
    command = shlex.join(["python", "bench/ablation.py", *argv])
    if not args.report_only:
        if not variants:
            parser.error("no variants: pass --variants-file and/or --variant")
        if not args.seeds:
            parser.error("--seeds is required unless --report-only")
        run_study(
            args.study,
            variants,
            args.seeds,
            args.baseline,
            results,
            out,
            config_path=args.config,
            steps=args.steps,
            common=args.common,
            recipe=DataRecipe(drives=args.drives, frames=args.frames),
            command=command,
            jobs=args.jobs,
            init_from=init_from,
        )
    markdown, _ = write_report(
        args.study, read_records(results), args.baseline, results, command, args.metrics, order
    )
    print(markdown.read_text())


if __name__ == "__main__":
    main()
