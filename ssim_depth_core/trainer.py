"""The training loop: data, model and objective come in; checkpoints, TensorBoard logs and metrics go out.

The loop knows no loss internals: it calls ``objective(batch, model(batch))`` and logs whatever named terms
and images come back. Single process, or one process per device under ``torchrun`` (DDP, rank-0 logging).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ssim_depth_core.artifact import metric_source
from ssim_depth_core.checkpoint import (
    TEMP_PATTERN,
    load_checkpoint,
    load_weights,
    remove_stale_temporaries,
    save_atomic,
    write_atomic,
)
from ssim_depth_core.config import OptimConfig, TrainConfig, config_differences, to_dict
from ssim_depth_core.data.sources import open_sequences, select_split
from ssim_depth_core.data.triplets import SkipTally, TripletDataset, build_samples, collate_skipping
from ssim_depth_core.evaluation import MetricsAccumulator, evaluate_depth_scalings
from ssim_depth_core.losses.objective import (
    Objective,
    check_training_data,
    required_inputs,
    required_outputs,
)
from ssim_depth_core.models.monodepth import MonodepthModel
from ssim_depth_core.outputs import occupied, remove_outputs, require_folder
from ssim_depth_core.progress import progress_bar

log = logging.getLogger(__name__)
# what --resume reads from last.pt beside the config and the model
TRAINING_STATE = (
    "objective", "optimizer", "scaler", "step", "epoch", "epoch_batches", "best_metric", "skipped_samples",
)  # fmt: skip
# what a resumed run may set differently from the run it continues: how long it trains, where and how it
# computes, how often it logs; anything else would make the continuation another run
RESUMABLE_CHANGES = frozenset(
    {
        "optim.epochs",
        "optim.max_steps",
        "device",
        "amp",
        "channels_last",
        "data.num_workers",
        "data.cache_frames",
        "log_every",
        "preview_every",
        "checkpoint_every",
    }
)


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded, per-epoch shuffle, rank-sharded) that can skip the samples already seen.

    Yields ``(epoch, index)`` keys (:meth:`TripletDataset.__getitem__`): DataLoader workers hold their own
    copy of the dataset, so the epoch that selects the augmentation travels with each index.
    """

    skip = 0

    def __iter__(self):
        return ((self.epoch, index) for index in itertools.islice(super().__iter__(), self.skip, None))

    def __len__(self) -> int:
        return super().__len__() - self.skip


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistributedContext:
        """Read torchrun's environment; a plain ``python`` run is rank 0 of 1."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        return cls(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, context: DistributedContext) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"config device '{name}' asks for CUDA but torch sees no CUDA device")
        if device.index is None:
            device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    return device


def resolve_amp(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for config ``amp`` on this device (None = full precision)."""
    if device.type != "cuda" or name == "none":
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


def check_run_dir(out_dir: Path, resume: bool, overwrite: bool) -> bool:
    """Refuse a non-empty run folder unless ``resume`` (continue that run) or ``overwrite``; True when an
    earlier run is there to be replaced, which :func:`clear_run_dir` does once the new run has loaded (data,
    model, ``--init-from`` weights), so that a run which cannot start loses nothing."""
    if resume and overwrite:
        raise ValueError(
            "--resume continues the run in the output folder and --overwrite replaces it: pass one"
        )
    require_folder(out_dir, "choose a folder for the run")
    if resume:
        _check_resumable(out_dir / "checkpoints")
    if resume or not out_dir.is_dir() or not any(out_dir.iterdir()):
        return False
    if not overwrite:
        raise ValueError(
            f"{out_dir} is not empty (an earlier run?): pass --resume to continue that run, or --overwrite "
            "to start a new one there (its checkpoints and TensorBoard events are removed)"
        )
    return True


def _check_resumable(checkpoint_dir: Path) -> None:
    """Refuse ``--resume`` of a run that has checkpoints but no ``last.pt`` file: starting from scratch would
    replace them (a run without any checkpoint yet starts from scratch)."""
    last = checkpoint_dir / "last.pt"
    if last.is_file() or not checkpoint_dir.is_dir():
        return
    kept = sorted(p.name for p in checkpoint_dir.iterdir() if p != last and not TEMP_PATTERN.match(p.name))
    if kept or occupied(last):
        others = f" but the run has checkpoints ({', '.join(kept)})" if kept else ""
        raise ValueError(
            f"--resume: {last} is not a checkpoint file (missing, a folder or a broken link){others}: put "
            "its last.pt back, or pass --overwrite instead of --resume to start a new run there"
        )


def clear_run_dir(out_dir: Path) -> None:
    """Remove an earlier run's checkpoints and TensorBoard events, so that two runs never mix (a removal that
    fails stops the new run: OSError)."""
    remove_outputs(out_dir, ("checkpoints", "tensorboard"))
    log.warning("--overwrite: removed the earlier checkpoints and TensorBoard events of %s", out_dir)


def learning_rate(optim: OptimConfig, progress: float) -> float:
    """The learning rate after ``progress`` epochs of training (fractional: epochs plus batches done).

    ``optim.lr_schedule`` "step": ``learning_rate * lr_gamma ** floor(progress / lr_step_epochs)`` (as
    torch's StepLR stepped every epoch); "cosine": ``learning_rate * (1 + cos(pi * progress / epochs)) / 2``,
    which reaches 0 at the end of the last epoch. A pure function of the position in the data, so a resumed
    run continues the same schedule.
    """
    if optim.lr_schedule == "step":
        return optim.learning_rate * optim.lr_gamma ** math.floor(progress / optim.lr_step_epochs)
    if optim.lr_schedule == "cosine":
        fraction = min(progress / optim.epochs, 1.0)
        return optim.learning_rate * 0.5 * (1.0 + math.cos(math.pi * fraction))
    raise ValueError(f"config 'optim.lr_schedule' must be step or cosine, got '{optim.lr_schedule}'")


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }


class Trainer:
    """Trains a :class:`MonodepthModel` with an :class:`Objective` on the sequences found at ``data_path``.

    The model is metric (depth in metres: validated, and ``best.pt`` chosen, without median scaling) when it
    trains with velocity supervision (``loss.weights.velocity`` > 0), ground-truth depth
    (``loss.weights.supervised`` > 0) or a stereo partner (``data.stereo``). ``init_from`` names a checkpoint
    whose model weights (only: not the optimiser, step or objective) start a new run, e.g. a supervised
    fine-tune of a self-supervised model; a run resumed from its own ``last.pt`` ignores it.
    """

    def __init__(
        self,
        config: TrainConfig,
        data_path: str | Path,
        out_dir: str | Path,
        resume: bool = False,
        overwrite: bool = False,
        init_from: str | Path = "",
    ):
        self.config = config
        self.out_dir = Path(out_dir)
        self.context = DistributedContext.from_env()
        # before the process group forms: no rank has written into out_dir yet
        replace_earlier_run = check_run_dir(self.out_dir, resume, overwrite)
        if self.context.is_main:
            # A run killed inside a checkpoint write leaves that write's temporary (as large as a checkpoint):
            # remove those no live writer holds (checkpoint.remove_stale_temporaries).
            remove_stale_temporaries(self.checkpoint_dir)
        if self.context.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.device = resolve_device(config.device, self.context)
        self.amp_dtype = resolve_amp(config.amp, self.device)
        self.channels_last = config.channels_last and self.device.type == "cuda"
        if self.device.type == "cpu":
            # Subnormal floats (below 1.2e-38) cost x86 CPUs 10-20x per op, and some batches produce them in
            # the backward pass: inverse-depth supervision took 10 s instead of 0.7 s on those steps. Flushed
            # to zero they change nothing a float32 network can tell apart. It holds for this thread and the
            # threads started after it: torch's intra-op pool, if already running, keeps its own setting.
            torch.set_flush_denormal(True)
        torch.manual_seed(config.seed)

        frame_ids, stereo = config.data.frame_ids, config.data.stereo
        # The networks and the objective check their settings before any data is read (a large bag takes a
        # while to index).
        self.metric = metric_source(to_dict(config)) != "none"
        # Optional outputs (e.g. the sources' depths) only where a weighted loss term asks for them.
        extra_outputs = required_outputs(config.loss)
        self.model = MonodepthModel(config.model, frame_ids, stereo=stereo, extra_outputs=extra_outputs).to(
            self.device
        )
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.objective = Objective(
            config.loss,
            frame_ids,
            config.model.scales,
            seed=config.seed,
            stereo=stereo,
            depth_range=(config.model.min_depth, config.model.max_depth),
        ).to(self.device)
        # The fused kernel updates all parameters in one pass (timed by bench/train_step.py).
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=config.optim.learning_rate,
            weight_decay=config.optim.weight_decay,
            fused=self.device.type in ("cpu", "cuda"),
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.network = self.model
        if self.context.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=ids)

        sequences = open_sequences(data_path, config.data)
        if not sequences:
            raise ValueError(f"no sequences found under {data_path}")
        train_split = select_split(data_path, config.data.train_split, "train")
        train_samples = build_samples(sequences, frame_ids, train_split)
        if not train_samples:
            raise ValueError(f"{data_path}: no training samples (every frame needs neighbours {frame_ids})")
        # Ground truth (a velodyne projection per sample on KITTI without proj_depth) only for a term
        # that reads it.
        self.train_set = TripletDataset(
            sequences,
            train_samples,
            config.data,
            train=True,
            seed=config.seed,
            load_depth_gt="depth_gt" in required_inputs(config.loss),
        )
        if train_split is not None:
            log.info("training on %d samples of %s", len(self.train_set), train_split)
        else:
            log.info(
                "no train split (%s): training on every usable frame of %d sequences, %d samples",
                _no_split_reason(config.data.train_split, data_path, "train"),
                len(sequences),
                len(self.train_set),
            )
        check_training_data(config.loss, self.train_set, str(data_path))
        if stereo and config.model.initial_depth == 0 and not resume:
            log.warning(
                "stereo training from the default initial depth (about %.2g m): the stereo warp's "
                "disparities start far outside the image and the known baseline may never set the scale; set "
                "model.initial_depth to the scenes' typical depth in metres (e.g. 10 for driving)",
                2 * config.model.min_depth,
            )
        self.val_set = None
        val_split = select_split(data_path, config.data.val_split, "val")
        if val_split is not None:
            val_samples = build_samples(sequences, frame_ids, val_split)
            if not val_samples:
                raise ValueError(f"{val_split}: no validation samples with neighbours {frame_ids}")
            self.val_set = TripletDataset(
                sequences, val_samples, config.data, train=False, seed=config.seed, load_depth_gt=True
            )
            log.info(
                "validating on %d samples of %s; best.pt keeps the best weights", len(self.val_set), val_split
            )
        else:
            log.info(
                "no validation split (%s): no validation pass; best.pt will hold the last weights",
                _no_split_reason(config.data.val_split, data_path, "val"),
            )
        self.sampler = ResumableSampler(
            self.train_set,
            num_replicas=self.context.world_size,
            rank=self.context.rank,
            shuffle=True,
            seed=config.seed,
            drop_last=True,
        )
        self.loader = self._loader(self.train_set, self.sampler)

        self.step = 0  # optimiser steps
        self.epoch = 0
        self.epoch_batches = 0  # batches of the current epoch consumed (readable or not): the resume point
        self.best_metric = math.inf
        self.skipped_samples = 0
        resumed = resume and self._resume()
        if init_from and not resumed:
            self._init_from(Path(init_from))
        self.writer = None
        if replace_earlier_run and self.context.world_size > 1:
            dist.barrier()  # every rank has read what it needs from the run folder (e.g. --init-from)
        if self.context.is_main:
            from torch.utils.tensorboard import SummaryWriter

            if replace_earlier_run:
                clear_run_dir(self.out_dir)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(
                self.out_dir / "config.yaml", yaml.safe_dump(to_dict(config), sort_keys=False).encode()
            )
            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))

    def _loader(self, dataset: TripletDataset, sampler=None) -> DataLoader:
        workers = self.config.data.num_workers
        return DataLoader(
            dataset,
            batch_size=self.config.optim.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            collate_fn=collate_skipping,
            drop_last=sampler is not None,
            # its own generator for the workers' base seed: each iterator would draw it from torch's global
            # one, which the model's randomness uses, and a resumed run creates one iterator more
            generator=torch.Generator().manual_seed(self.config.seed),
        )

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def _state(self) -> dict[str, Any]:
        return {
            "config": to_dict(self.config),
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "epoch_batches": self.epoch_batches,
            "best_metric": self.best_metric,
            "skipped_samples": self.skipped_samples,
            # torch's global generators drive in-model randomness (ConvNeXt's stochastic depth, dropout).
            # Every rank seeds them alike and draws alike, so rank 0's CPU generator and its own device's
            # stand for every rank's (rank r draws on device r).
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def save_checkpoint(self, name: str) -> Path:
        """Write the full training state to ``checkpoints/<name>`` (rank 0 only); returns the path."""
        path = self.checkpoint_dir / name
        if self.context.is_main:
            save_atomic(self._state(), path)
        return path

    def _init_from(self, path: Path) -> None:
        """Load the model weights of checkpoint ``path`` (weights-only file), strictly: same networks."""
        state = load_checkpoint(path, map_location=self.device)
        load_weights(self.model, state["model"], f"--init-from {path}")
        log.info("model weights initialised from %s (a new run: step 0, fresh optimiser)", path)

    def _resume(self) -> bool:
        """Restore the full training state from ``last.pt``; False (a new run) when there is none."""
        path = self.checkpoint_dir / "last.pt"
        if not path.is_file():
            log.warning("--resume: no checkpoint at %s, starting from scratch", path)
            return False
        state = load_checkpoint(path, map_location=self.device, required=TRAINING_STATE)
        changed = config_differences(
            _resolved_splits(state["config"]), _resolved_splits(to_dict(self.config)), RESUMABLE_CHANGES
        )
        if changed:
            raise ValueError(
                f"--resume {path}: the run was started with another config ({'; '.join(changed)}); a resumed "
                f"run may change only {', '.join(sorted(RESUMABLE_CHANGES))}. Resume with the run's own "
                f"config ({self.out_dir / 'config.yaml'}) or start a new run (--overwrite, or another --out)"
            )
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:  # empty when the run trained without fp16 loss scaling (CPU, bf16, amp none)
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.epoch_batches = state["step"], state["epoch"], state["epoch_batches"]
        self.best_metric = state["best_metric"]
        self.skipped_samples = state["skipped_samples"]
        if "rng" in state:  # checkpoints from before 2026-12-07 have none
            # generator states are CPU byte tensors, wherever map_location put the checkpoint's tensors
            torch.set_rng_state(state["rng"].cpu())
            if self.device.type == "cuda" and isinstance(state["cuda_rng"], torch.Tensor):
                torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)
        return True

    @property
    def steps_per_epoch(self) -> int:
        return (len(self.train_set) // self.context.world_size) // self.config.optim.batch_size

    def _done(self) -> bool:
        max_steps = self.config.optim.max_steps
        return self.epoch >= self.config.optim.epochs or (max_steps > 0 and self.step >= max_steps)

    def fit(self) -> dict[str, float]:
        """Train until the configured epochs or ``optim.max_steps``; returns the last validation metrics."""
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(self.train_set)} training samples are fewer than one batch of "
                f"{self.config.optim.batch_size} per process"
            )
        metrics: dict[str, float] = {}
        while not self._done():
            if self._train_epoch():
                self.epoch += 1
                self.epoch_batches = 0
            metrics = self.validate()
            self.save_checkpoint("last.pt")
        if self.val_set is None and self.context.is_main:
            path = self.save_checkpoint("best.pt")
            log.info("no validation split: %s holds the last weights (step %d)", path, self.step)
        if self.writer is not None:
            self.writer.flush()
        if self.context.world_size > 1:
            dist.barrier()
        return metrics

    def _train_epoch(self) -> bool:
        """Train on the rest of the current epoch; True when it ran to its end (not cut by max_steps). The
        samples skipped as unreadable are logged at the end, one line counting them by source and reason."""
        self.sampler.set_epoch(self.epoch)
        self.sampler.skip = self.epoch_batches * self.config.optim.batch_size
        self.network.train()
        description = f"epoch {self.epoch + 1}/{self.config.optim.epochs}"
        skips, seen, complete = SkipTally(), 0, True
        with progress_bar(self.loader, desc=description, disable=not self.context.is_main) as bar:
            tic = time.perf_counter()
            for batch in bar:
                self.epoch_batches += 1
                skipped = batch.pop("skipped")
                self.skipped_samples += len(skipped)
                skips.add(skipped)
                seen += len(skipped) + (len(batch["index"]) if batch else 0)
                if not batch:  # every sample of this batch was unreadable
                    continue
                loss, outputs = self._train_step(batch)
                self.step += 1
                rate = 1.0 / max(time.perf_counter() - tic, 1e-9)
                tic = time.perf_counter()
                bar.set_postfix(
                    loss=f"{loss.total.item():.4f}", it_s=f"{rate:.2f}", skipped=self.skipped_samples
                )
                if self.writer is not None:
                    self._log(loss, outputs, batch, rate)
                if self.step % self.config.checkpoint_every == 0:
                    self.save_checkpoint("last.pt")
                if self._done() and self.epoch_batches < self.steps_per_epoch:
                    complete = False
                    break
        if skips.total():
            log.warning(
                "epoch %d: skipped %d of %d samples: %s", self.epoch + 1, skips.total(), seen, skips.summary()
            )
        return complete

    def _train_step(self, batch: dict[str, Any]):
        batch = _to_device(batch, self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            outputs = self.network(batch)
        loss = self.objective(batch, _float32(outputs), step=self.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss.total).backward()
        rate = learning_rate(self.config.optim, self.epoch + (self.epoch_batches - 1) / self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss, outputs

    def _log(self, loss, outputs: dict[str, Any], batch: dict[str, Any], rate: float) -> None:
        if self.step % self.config.log_every == 0:
            self.writer.add_scalar("loss/total", loss.total.item(), self.step)
            for name, value in loss.terms.items():
                self.writer.add_scalar(f"loss/{name}", float(value), self.step)
            self.writer.add_scalar("lr", self.optimizer.param_groups[0]["lr"], self.step)
            self.writer.add_scalar("it_per_s", rate, self.step)
            self.writer.add_scalar("data/skipped_samples", self.skipped_samples, self.step)
        if self.step % self.config.preview_every == 0:
            count = min(4, batch["images"].shape[0])
            self.writer.add_images("input", batch["images"][:count, 0], self.step)
            disparity = outputs["disparities"][0][:count].detach().float()
            peak = disparity.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
            self.writer.add_images("disparity", disparity / peak, self.step)
            for name, image in loss.images.items():
                self.writer.add_images(name, image[:count].detach().float(), self.step)

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        """Depth metrics on the validation split when it has ground truth, else its loss.

        Median-scaled metrics (``abs_rel``, ...) for every model, the mean per-image scale ratio
        median(gt) / median(pred) (``scale_ratio``), and for a metric model the metrics without scaling
        (``metric_abs_rel``, ...), by which ``best.pt`` is then chosen; else by ``abs_rel``, or the loss
        without ground truth.
        """
        if self.val_set is None or not self.context.is_main:
            return {}
        self.model.eval()
        scaled, metric = MetricsAccumulator(), MetricsAccumulator()
        losses = []
        for batch in progress_bar(self._loader(self.val_set), desc="validate", leave=False):
            batch.pop("skipped")
            if not batch:
                continue
            batch = _to_device(batch, self.device)
            outputs = self.model(batch)
            losses.append(self.objective(batch, outputs).total.item())
            if "depth_gt" in batch:
                for gt, pred in zip(batch["depth_gt"][:, 0], outputs["depths"][0][:, 0], strict=True):
                    gt, pred = gt.cpu().numpy(), pred.cpu().numpy()
                    try:
                        scores = evaluate_depth_scalings(gt, pred, unscaled=self.metric)
                    except ValueError:  # a frame without valid ground truth inside the crop
                        continue
                    scaled.add(scores.median, scores.ratio)
                    if scores.metric is not None:
                        metric.add(scores.metric)
        self.model.train()
        result = {"loss": float(np.mean(losses))} if losses else {}
        if len(scaled):
            result.update(scaled.mean())
            result["scale_ratio"] = scaled.scale_stats()["mean"]
        if len(metric):
            result.update({f"metric_{name}": value for name, value in metric.mean().items()})
        for name, value in result.items():
            self.writer.add_scalar(f"val/{name}", value, self.step)
        order = ("metric_abs_rel", "abs_rel", "loss") if self.metric else ("abs_rel", "loss")
        key = next((k for k in order if k in result), None)
        if key is not None and result[key] < self.best_metric:
            self.best_metric = result[key]
            self.save_checkpoint("best.pt")
        if result:
            log.info(
                "validation at step %d: %s", self.step, ", ".join(f"{k}={v:.4f}" for k, v in result.items())
            )
        return result


def _resolved_splits(values: dict[str, Any]) -> dict[str, Any]:
    """A config dict whose split files (``data.train_split``, ``data.val_split``) that exist are absolute
    paths: one file named relative or absolute is the same run's."""
    data = dict(values.get("data", {}))
    for key in ("train_split", "val_split"):
        if data.get(key) and Path(data[key]).is_file():
            data[key] = str(Path(data[key]).resolve())
    return {**values, "data": data}


def _no_split_reason(split: str, data_path: str | Path, name: str) -> str:
    """Why config value ``split`` selected no split file, for the log."""
    return f"data.{name}_split={split}" if split else f"no {Path(data_path) / 'splits'}/*/{name}_files.txt"


def _float32(outputs: dict[str, Any]) -> dict[str, Any]:
    """Cast autocast outputs back to float32 so the objective always computes in full precision."""

    def cast(value):
        if isinstance(value, torch.Tensor):
            return value.float()
        if isinstance(value, list):
            return [cast(v) for v in value]
        if isinstance(value, dict):
            return {k: cast(v) for k, v in value.items()}
        return value

    return cast(outputs)
