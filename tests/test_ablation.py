"""bench/ablation.py: the bootstrap interval against scipy and hand-computed cases, verdicts, pairing on
common seeds, the short recipe's schedule, skip-on-rerun and the changed-setup error, the report files, and
one tiny study end to end."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from ssim_depth_core.config import TrainConfig, config_differences, load_config, stored_config, to_dict
from ssim_depth_core.trainer import learning_rate

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ablation", ROOT / "bench" / "ablation.py")
ablation = importlib.util.module_from_spec(_spec)
sys.modules["ablation"] = ablation  # dataclasses resolve their module by name
_spec.loader.exec_module(ablation)

BASELINE_ABS_REL = {0: 0.150, 1: 0.162, 2: 0.141, 3: 0.155, 4: 0.148}


def _evaluation(abs_rel: float, metric: bool = True) -> dict:
    errors = {
        "abs_rel": abs_rel,
        "sq_rel": 1.0,
        "rmse": 40 * abs_rel,
        "rmse_log": 0.2,
        "a1": 1 - 1.5 * abs_rel,
    }
    errors.update(a2=0.9, a3=0.95)
    evaluation = {"metric_source": "velocity" if metric else "none", "images": 58, "scale_mean": 1.0}
    evaluation.update(scale_std=0.05, median=dict(errors, abs_rel=abs_rel + 0.01))
    if metric:
        evaluation["metric"] = errors
    return evaluation


def _record(variant: str, seed: int, abs_rel: float, overrides=(), metric: bool = True) -> dict:
    return {
        "study": "toy",
        "variant": variant,
        "overrides": list(overrides),
        "common_overrides": [],
        "seed": seed,
        "steps": 980,
        "config": "training/configs/synthetic_cpu.yaml",
        "data": ablation.DataRecipe().manifest(),
        "schedule": {"optim.max_steps": 980, "optim.epochs": 4, "optim.lr_step_epochs": 3},
        "train_minutes": 5.5,
        "resumed_from_step": 0,
        "trained_steps": 980,
        "device": "cpu",
        "eval_minutes": 0.2,
        "date": "2026-12-05T10:00:00+00:00",
        "machine": {"platform": "Linux", "cpu": "AMD EPYC", "cpus": 2, "torch": "2.x"},
        "git_commit": "0123456789abcdef-dirty",
        "command": "python bench/ablation.py ...",
        "train_config": {"seed": seed, "loss": {"alpha": 0.85}},
        "evaluation": _evaluation(abs_rel, metric),
    }


def _toy_records() -> list[dict]:
    shifts = {"better": -0.02, "worse": 0.02}
    records = [_record("base", s, v) for s, v in BASELINE_ABS_REL.items()]
    for name, shift in shifts.items():
        records += [_record(name, s, v + shift, [f"x={name}"]) for s, v in BASELINE_ABS_REL.items()]
    jitter = [0.004, -0.005, 0.003, -0.004, 0.001]  # straddles 0
    records += [
        _record("same", s, v + j, ["x=same"])
        for (s, v), j in zip(BASELINE_ABS_REL.items(), jitter, strict=True)
    ]
    records.append(_record("single", 0, 0.10, ["x=single"]))
    return records


# ------------------------------------------------------------------------------------------ statistics


def test_bootstrap_interval_agrees_with_scipy_percentile_bootstrap():
    differences = np.array([-0.012, 0.003, -0.020, -0.007, 0.001, -0.015, -0.009, 0.004])
    low, high = ablation.bootstrap_interval(differences)
    reference = scipy.stats.bootstrap(
        (differences,),
        np.mean,
        n_resamples=20_000,
        method="percentile",
        confidence_level=0.95,
        random_state=7,
    ).confidence_interval
    standard_error = differences.std(ddof=1) / np.sqrt(differences.size)
    # two Monte-Carlo estimates of the same quantiles: a few hundredths of a standard error apart
    assert low == pytest.approx(reference.low, abs=0.1 * standard_error)
    assert high == pytest.approx(reference.high, abs=0.1 * standard_error)
    assert ablation.bootstrap_interval(differences) == (low, high)  # a fixed generator: reproducible


def test_bootstrap_interval_hand_computed_cases():
    assert ablation.bootstrap_interval([-0.01] * 5) == pytest.approx((-0.01, -0.01))
    assert ablation.bootstrap_interval([0.3]) == pytest.approx((0.3, 0.3))
    # two values: resample means 0, 0.5, 1 with probability 1/4, 1/2, 1/4 -> the 2.5% and 97.5% quantiles
    assert ablation.bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="at least one value"):
        ablation.bootstrap_interval([])


def test_sign_flip_p_is_exact():
    assert ablation.sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)  # only all + and all - reach |2|
    assert ablation.sign_flip_p([1.0, -1.0]) == 1.0
    assert ablation.sign_flip_p([0.5, 0.5, 0.5, 0.5, -0.1]) == pytest.approx(4 / 32)  # |mean| >= 0.38


def test_verdicts_for_better_worse_overlapping_and_single_seed():
    summaries = {s.name: s for s in ablation.summarize(_toy_records(), "base", "metric")}
    assert summaries["base"].verdict == "baseline"
    assert summaries["better"].verdict == "better"
    assert summaries["worse"].verdict == "worse"
    assert summaries["same"].verdict == "no detectable difference"
    assert summaries["single"].verdict == "undecided (n < 2)"
    better = summaries["better"].comparisons
    assert better["abs_rel"].mean == pytest.approx(-0.02)
    assert better["abs_rel"].low == pytest.approx(-0.02) and better["abs_rel"].high == pytest.approx(-0.02)
    assert better["a1"].mean == pytest.approx(0.03)  # a1 = 1 - 1.5 AbsRel in the toy records
    higher = ablation.Comparison([0, 1], [0.01, 0.02], 0.015, 0.01, 0.02, 0.5)
    assert ablation.verdict(higher, higher_is_better=True) == "better"
    assert ablation.verdict(higher) == "worse"


def test_differences_pair_only_the_common_seeds():
    records = [_record("base", s, v) for s, v in BASELINE_ABS_REL.items() if s != 4]
    records += [_record("v", s, BASELINE_ABS_REL[s] - 0.01, ["x=1"]) for s in (1, 2, 3)]
    records.append(_record("v", 9, 5.0, ["x=1"]))  # no baseline seed 9: must not enter the difference
    (_, variant) = ablation.summarize(records, "base", "metric")
    comparison = variant.comparisons["abs_rel"]
    assert comparison.seeds == [1, 2, 3] and variant.seeds == [1, 2, 3, 9]
    assert comparison.differences == pytest.approx([-0.01] * 3)
    assert comparison.mean == pytest.approx(-0.01)


def test_metric_basis_and_report_consistency_checks():
    records = _toy_records()
    assert ablation.metric_basis(records) == "metric"
    mixed = [*records, _record("scale_less", 0, 0.2, ["x=y"], metric=False)]
    assert ablation.metric_basis(mixed) == "median"
    with pytest.raises(ValueError, match="scale_less have scale-less records"):
        ablation.metric_basis(mixed, "metric")
    # velocity-trained but 31x off (the 980-step recipe's models): in metres by training, not in fact
    off_scale = _record("short", 0, 0.96, ["x=short"])
    off_scale["evaluation"]["scale_mean"] = 31.3
    within = _record("close", 0, 0.2, ["x=close"])
    within["evaluation"]["scale_mean"] = 1.45
    assert ablation.off_scale_variants([*records, off_scale, within]) == ["short"]
    assert ablation.metric_basis([*records, within]) == "metric"
    assert ablation.metric_basis([*records, off_scale]) == "median"
    assert ablation.metric_basis([*records, off_scale], "metric") == "metric"
    summaries = ablation.summarize([*records, off_scale], "base", "median")
    markdown = ablation.render_markdown(
        "toy", [*records, off_scale], summaries, "base", "median", "cmd", "toy.png"
    )
    assert (
        "- Metrics: median-scaled" in markdown
        and "(mean scale ratio beyond 1.5x either way): short;" in markdown
    )
    with pytest.raises(ValueError, match=r"more than one record of seed\(s\) \[0\]"):
        ablation.summarize([*records, _record("base", 0, 0.2)], "base", "metric")
    with pytest.raises(ValueError, match="variant 'better' .* overrides"):
        ablation.summarize([*records, _record("better", 7, 0.2, ["x=other"])], "base", "metric")
    with pytest.raises(ValueError, match="baseline 'nobody' has no records"):
        ablation.summarize(records, "nobody", "metric")


# ------------------------------------------------------------------------------------ variants, recipe


def test_study_records_still_resolve_to_their_variants():
    """A variant's records keep their meaning only while its overrides, on today's recipe, give the config the
    records were trained with: a recipe default that changes under a variant that does not spell it out
    (the light config's learning rate, 2026-12-06) must fail here, not hours into the next study run."""
    checked = 0
    for study in sorted((ROOT / "bench" / "studies").glob("*.yaml")):
        variants = ablation.load_variants(study)[0]
        results = ROOT / "docs" / "studies" / f"{study.stem}.jsonl"
        records = ablation.read_records(results)
        for record in records:
            if record["variant"] not in variants:
                continue
            overrides = variants[record["variant"]]
            schedule_and_overrides = ablation.compose_overrides(
                record["schedule"], record["common_overrides"], overrides
            )
            today = {
                **record,
                "overrides": overrides,
                "train_config": to_dict(load_config(ROOT / record["config"], schedule_and_overrides)),
            }
            ablation.check_same_setup(records, record["variant"], today, results)  # raises naming the change
            checked += 1
    assert checked >= 100  # the shipped studies' records are read


def test_variants_file_and_inline_variants(tmp_path):
    for study in (ROOT / "bench" / "studies").glob("*.yaml"):  # every override is a key of the recipe
        for overrides in ablation.load_variants(study)[0].values():
            load_config(ablation.DEFAULT_CONFIG, overrides)
    variants, init_from = ablation.load_variants(ROOT / "bench" / "studies" / "ssim.yaml")
    assert init_from == {}
    assert {"additive", "conventional", "exponent", "l1", "additive_0.5_0_0.5"} <= set(variants)
    assert load_config(None, variants["additive_0.5_0_0.5"]).loss.ssim_weights == [0.5, 0.0, 0.5]
    assert load_config(None, variants["l1"]).loss.alpha == 0.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [seed=3]\n")
    with pytest.raises(ValueError, match="variant 'a' sets seed"):
        ablation.load_variants(bad)
    bad.write_text("'a b': []\n")
    with pytest.raises(ValueError, match="variant name 'a b'"):
        ablation.load_variants(bad)
    args = ablation.build_parser().parse_args(
        [
            "--study",
            "s",
            "--baseline",
            "a",
            "--variant",
            "a",
            "--variant",
            "b",
            "loss.ssim_weights=[0.5,0,0.5]",
        ]
    )
    assert args.variant == [["a"], ["b", "loss.ssim_weights=[0.5,0,0.5]"]]


def test_short_recipe_drops_the_learning_rate_near_its_end():
    optim = load_config(ablation.DEFAULT_CONFIG).optim  # 10 epochs, the drop after 9
    assert ablation.study_schedule(optim, 245, 0) == (2450, {})
    assert ablation.study_schedule(optim, 245, 2450)[1] == {
        "optim.max_steps": 2450,
        "optim.epochs": 10,
        "optim.lr_step_epochs": 9,
    }
    steps, schedule = ablation.study_schedule(optim, 245, 980)
    assert schedule == {"optim.max_steps": 980, "optim.epochs": 4, "optim.lr_step_epochs": 3}
    config = load_config(ablation.DEFAULT_CONFIG, [f"{k}={v}" for k, v in schedule.items()])
    # the trainer's rate at 0-based step k is learning_rate(optim, k / steps_per_epoch)
    rates = [learning_rate(config.optim, k / 245) for k in range(steps)]
    assert rates[:735] == [pytest.approx(2e-4)] * 735 and rates[735:] == [pytest.approx(2e-5)] * 245
    assert ablation.study_schedule(optim, 245, 600)[1]["optim.lr_step_epochs"] == 2  # at 490 of 600
    assert ablation.study_schedule(optim, 245, 100)[1]["optim.lr_step_epochs"] == 1  # no boundary: no drop


# ------------------------------------------------------------------------- rerun, changed setup, report


@pytest.fixture
def fake_training(tmp_path, monkeypatch):
    """run_study with rendering, sample counting, training and evaluation replaced: records only."""
    trained = []

    def prepare_data(out, recipe):
        return tmp_path / "data", tmp_path / "split.txt", tmp_path / "heldout"

    def train_pair(config, data, run_dir, init_from=None):
        trained.append((run_dir.name, config.seed, config.optim.max_steps, config.loss.alpha, init_from))
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "best.pt").touch()
        return {"train_minutes": 0.1, "resumed_from_step": 0, "trained_steps": 980, "device": "cpu"}

    def evaluate_model(checkpoint, heldout, split, backend, progress):
        return _evaluation(0.15)

    monkeypatch.setattr(ablation, "prepare_data", prepare_data)
    monkeypatch.setattr(ablation, "steps_per_epoch", lambda config, data, split: 245)
    monkeypatch.setattr(ablation, "train_pair", train_pair)
    monkeypatch.setattr(ablation, "evaluate_model", evaluate_model)
    return trained


def test_rerun_skips_recorded_pairs_and_a_changed_variant_is_an_error(fake_training, tmp_path):
    results = tmp_path / "toy.jsonl"
    variants = {"base": [], "l1": ["loss.alpha=0"]}
    study = dict(study="toy", baseline="base", results=results, out=tmp_path / "out", steps=980)
    ablation.run_study(variants=variants, seeds=[0, 1], **study)
    assert [(name, seed) for name, seed, *_ in fake_training] == [
        ("base_s0", 0),
        ("l1_s0", 0),
        ("base_s1", 1),
        ("l1_s1", 1),
    ]
    assert {steps for _, _, steps, *_ in fake_training} == {980}
    records = ablation.read_records(results)
    assert [(r["variant"], r["seed"]) for r in records] == [("base", 0), ("l1", 0), ("base", 1), ("l1", 1)]
    record = records[1]
    assert record["overrides"] == ["loss.alpha=0"] and record["train_config"]["loss"]["alpha"] == 0.0
    assert record["schedule"] == {"optim.max_steps": 980, "optim.epochs": 4, "optim.lr_step_epochs": 3}
    assert record["config"] == "training/configs/synthetic_cpu.yaml"
    assert re.fullmatch(r"([0-9a-f]{40}(-dirty)?|unknown)", record["git_commit"])
    assert record["machine"]["cpu"] and record["evaluation"]["metric"]["abs_rel"] == 0.15

    fake_training.clear()
    ablation.run_study(variants=variants, seeds=[0, 1, 2], **study)  # extended by one seed
    assert [name for name, *_ in fake_training] == ["base_s2", "l1_s2"]
    assert len(ablation.read_records(results)) == 6

    fake_training.clear()
    with pytest.raises(
        ValueError, match=r"variant 'l1' \(seed 0\) was measured with another setup: overrides"
    ):
        ablation.run_study(variants={"base": [], "l1": ["loss.alpha=0.5"]}, seeds=[0], **study)
    with pytest.raises(ValueError, match="variant 'base' .* steps: 980 -> 600"):
        ablation.run_study(variants=variants, seeds=[0], **{**study, "steps": 600})
    with pytest.raises(ValueError, match="baseline 'other' is neither among the variants nor recorded"):
        ablation.run_study(variants=variants, seeds=[0], **{**study, "baseline": "other"})
    assert fake_training == [] and len(ablation.read_records(results)) == 6


def test_fine_tune_variants_start_from_their_source_of_the_same_seed(fake_training, tmp_path):
    file = tmp_path / "study.yaml"
    file.write_text(
        "base: []\nft:\n  init_from: base\n  overrides: [loss.alpha=0]\nother: [loss.alpha=0.5]\n"
    )
    variants, init_from = ablation.load_variants(file)
    assert variants == {"base": [], "ft": ["loss.alpha=0"], "other": ["loss.alpha=0.5"]}
    assert init_from == {"ft": "base"}
    for text, message in [
        ("base: []\nft: {init_from: ft}\n", "'ft' starts from 'ft', which is not another variant"),
        ("base: []\nft: {init_from: nope}\n", "'ft' starts from 'nope', which is not another variant"),
        ("base: []\nft: {init_from: base}\nft2: {init_from: ft}\n", "a fine-tune itself"),
        ("base: []\nft: {init: base}\n", "takes init_from .* and overrides"),
    ]:
        file.write_text(text)
        with pytest.raises(ValueError, match=message):
            ablation.load_variants(file)

    out = tmp_path / "out"
    results = tmp_path / "ft.jsonl"
    study = dict(study="ft", baseline="base", results=results, out=out, steps=980)
    ablation.run_study(variants=variants, seeds=[0, 1], init_from=init_from, **study)
    # the fine-tunes come last, each from its own seed's best.pt of base
    assert [(name, init) for name, *_, init in fake_training] == [
        ("base_s0", None),
        ("other_s0", None),
        ("base_s1", None),
        ("other_s1", None),
        ("ft_s0", out / "runs" / "base_s0" / "checkpoints" / "best.pt"),
        ("ft_s1", out / "runs" / "base_s1" / "checkpoints" / "best.pt"),
    ]
    records = {(r["variant"], r["seed"]): r for r in ablation.read_records(results)}
    assert records["ft", 1]["init_from"] == "base" and records["base", 1]["init_from"] == ""
    markdown, _ = ablation.write_report("ft", list(records.values()), "base", results, "cmd")
    assert "| ft | from `base`'s weights (same seed): `loss.alpha=0` | 2 |" in markdown.read_text()

    with pytest.raises(
        ValueError, match=r"variant 'ft' \(seed 0\) was measured with another setup: init_from"
    ):
        ablation.run_study(variants=variants, seeds=[0], **study)  # the same overrides from scratch
    fake_training.clear()
    with pytest.raises(ValueError, match="'ft' starts from 'base' of seed 2: add 'base' to the run"):
        ablation.run_study(variants={"ft": variants["ft"]}, seeds=[2], init_from=init_from, **study)
    with pytest.raises(ValueError, match="'ft' starts from 'nope', which is not another variant"):
        ablation.run_study(variants={"ft": variants["ft"]}, seeds=[2], init_from={"ft": "nope"}, **study)
    with pytest.raises(ValueError, match="fine-tune 'ft2' is not among the variants"):
        ablation.run_study(variants=variants, seeds=[2], init_from={**init_from, "ft2": "base"}, **study)
    (out / "runs" / "base_s1" / "checkpoints" / "best.pt").unlink()
    (results.write_text("".join(json.dumps(r) + "\n" for k, r in records.items() if k != ("ft", 1))))
    with pytest.raises(FileNotFoundError, match="base_s1/checkpoints/best.pt, which is missing"):
        ablation.run_study(variants={"ft": variants["ft"]}, seeds=[1], init_from=init_from, **study)
    assert fake_training == []


def test_report_only_writes_markdown_and_png(tmp_path, capsys):
    results = tmp_path / "toy.jsonl"
    for record in _toy_records():
        ablation.append_record(results, record)
    argv = ["--study", "toy", "--baseline", "base", "--results", str(results), "--report-only"]
    ablation.main(argv)
    markdown = (tmp_path / "toy.md").read_text()
    assert markdown == capsys.readouterr().out.rstrip("\n") + "\n"
    spread = np.std(list(BASELINE_ABS_REL.values()), ddof=1)
    assert f"| better | `x=better` | 5 | 0.1312 ± {spread:.4f} |" in markdown
    assert "-0.0200 [-0.0200, -0.0200] |" in markdown
    for verdict in ("| better |", "| worse |", "| no detectable difference |", "| undecided (n < 2) |"):
        assert verdict in markdown
    assert "| -0.0500 (one seed) |" in markdown and "| 1 | - | undecided (n < 2) |" in markdown
    assert "without scaling (every record is of a metric model)" in markdown
    assert "    python bench/ablation.py --study toy --baseline base --results" in markdown
    assert "![toy: per-seed values and paired differences](toy.png)" in markdown
    png = (tmp_path / "toy.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_append_record_repairs_a_missing_last_newline(tmp_path):
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps({"a": 1}))  # edited by hand, no newline at the end
    ablation.append_record(results, {"b": 2})
    assert ablation.read_records(results) == [{"a": 1}, {"b": 2}]


# ----------------------------------------------------------------------------------------- end to end


def test_tiny_study_end_to_end_and_a_rerun_trains_nothing(tmp_path, monkeypatch):
    recipe = ablation.DataRecipe(drives=2, frames=6, width=128, height=64, heldout_frames=5)
    tiny = ["data.height=64", "data.width=128", "data.num_workers=0", "optim.batch_size=2"]
    study = dict(
        study="tiny",
        variants={"l1": ["loss.alpha=0"]},
        seeds=[3],
        baseline="l1",
        results=tmp_path / "tiny.jsonl",
        out=tmp_path / "out",
        steps=2,
        common=tiny,
        recipe=recipe,
        command="python bench/ablation.py --study tiny",
    )
    (record,) = ablation.run_study(**study)
    assert record["variant"] == "l1" and record["seed"] == 3 and record["steps"] == 2
    assert record["trained_steps"] == 2 and record["resumed_from_step"] == 0
    assert record["schedule"] == {"optim.max_steps": 2, "optim.epochs": 1, "optim.lr_step_epochs": 1}
    assert record["train_config"]["seed"] == 3 and record["train_config"]["loss"]["alpha"] == 0.0
    assert record["common_overrides"] == tiny and record["data"]["heldout_seed"] == 2
    evaluation = record["evaluation"]
    assert evaluation["images"] == 3 and evaluation["metric_source"] == "velocity"
    assert set(evaluation["metric"]) == set(evaluation["median"]) >= {"abs_rel", "rmse", "a1"}
    run = tmp_path / "out" / "runs" / "l1_s3"
    assert (run / "checkpoints" / "best.pt").is_file() and not (run / "checkpoints" / "last.pt").exists()
    location = [f"data.train_split={record['train_config']['data']['train_split']}", "data.val_split=none"]
    other_net = load_config(ablation.DEFAULT_CONFIG, [*tiny, *location, "model.encoder=resnet34"])
    refusal = "--init-from .*l1_s3/checkpoints/best.pt: its weights do not fit this network"
    with pytest.raises(ValueError, match=refusal):
        ablation.train_pair(
            other_net, tmp_path / "out" / "data", tmp_path / "ft", run / "checkpoints" / "best.pt"
        )

    def no_training(*args, **kwargs):
        raise AssertionError("a recorded pair was trained again")

    monkeypatch.setattr(ablation, "Trainer", no_training)
    monkeypatch.setattr(ablation, "generate_dataset", no_training)
    assert ablation.run_study(**study) == [record]
    markdown, figure = ablation.write_report("tiny", [record], "l1", study["results"], "cmd")
    assert "| l1 | `loss.alpha=0` | 1 |" in markdown.read_text() and figure.is_file()


def test_a_config_key_newer_than_a_record_stands_for_its_default():
    new = to_dict(TrainConfig())
    old = copy.deepcopy(new)
    del old["loss"]["ssim_window"]  # a record written before the key existed
    assert config_differences(old, new) == []
    new["loss"]["ssim_window"] = 5
    assert config_differences(old, new) == ["loss.ssim_window: 3 -> 5"]


def test_the_sql_heads_settings_count_only_for_the_sql_decoder():
    old = to_dict(TrainConfig())
    new = copy.deepcopy(old)
    new["model"]["sql"]["bins"] = "depth" if old["model"]["sql"]["bins"] == "disparity" else "disparity"
    assert old["model"]["decoder"] == "unet" and config_differences(old, new) == []
    old["model"]["decoder"] = new["model"]["decoder"] = "sql"
    assert config_differences(old, new) == [
        f"model.sql.bins: {old['model']['sql']['bins']!r} -> {new['model']['sql']['bins']!r}"
    ]
    new["model"]["decoder"] = "light"  # one of the two uses the head: its settings count
    assert len(config_differences(old, new)) == 2


def _pre_issue_19(train_config: dict, depth: int = 18) -> dict:
    """A resolved train config as records written before issue 19 store it: ResNet depths, no decoder keys."""
    old = copy.deepcopy(train_config)
    model = old["model"]
    assert (model.pop("encoder"), model.pop("pose_encoder")) == ("resnet18", "resnet18")
    del model["decoder"], model["sql"]
    model["num_layers"], model["pose_num_layers"] = depth, 18
    return old


def test_a_record_with_the_old_model_keys_is_the_same_setup_as_the_named_encoder(fake_training, tmp_path):
    results = tmp_path / "toy.jsonl"
    variants = {"base": [], "l1": ["loss.alpha=0"]}
    study = dict(study="toy", baseline="base", results=results, out=tmp_path / "out", steps=980)
    ablation.run_study(variants=variants, seeds=[0], **study)
    records = ablation.read_records(results)
    results.write_text(
        "".join(json.dumps({**r, "train_config": _pre_issue_19(r["train_config"])}) + "\n" for r in records)
    )
    assert all("num_layers" in r["train_config"]["model"] for r in ablation.read_records(results))

    fake_training.clear()  # seed 0 is recorded (old keys): planned against them, only seed 1 trains
    ablation.run_study(variants=variants, seeds=[0, 1], **study)
    assert [name for name, *_ in fake_training] == ["base_s1", "l1_s1"]
    ablation.main(["--study", "toy", "--baseline", "base", "--results", str(results), "--report-only"])

    other = {**records[0], "train_config": _pre_issue_19(records[0]["train_config"], depth=34)}
    results.write_text(json.dumps(other) + "\n")
    with pytest.raises(ValueError, match="variant 'base' .* model.encoder: 'resnet34' -> 'resnet18'"):
        ablation.run_study(variants=variants, seeds=[0], **study)


def test_the_ssim_study_records_read_as_resnet18_configs():
    """The stored SSIM-study records (model.num_layers: 18) equal their config written with today's keys."""
    record = json.loads((ROOT / "docs" / "studies" / "ssim.jsonl").read_text().splitlines()[0])
    assert record["train_config"]["model"]["num_layers"] == 18
    today = to_dict(stored_config(record["train_config"], "ssim.jsonl"))
    assert today["model"]["encoder"] == today["model"]["pose_encoder"] == "resnet18"
    assert config_differences(record["train_config"], today) == []
    today["model"]["encoder"] = "convnext_tiny"
    assert config_differences(record["train_config"], today) == [
        "model.encoder: 'resnet18' -> 'convnext_tiny'"
    ]


def test_jobs_train_pairs_in_worker_processes_with_the_same_records(tmp_path, monkeypatch):
    """--jobs 2 trains pairs in two spawned processes; each evaluation equals the one-process run's."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # the workers import this module by its name
    recipe = ablation.DataRecipe(drives=2, frames=6, width=128, height=64, heldout_frames=5)
    tiny = ["data.height=64", "data.width=128", "data.num_workers=0", "optim.batch_size=2"]
    study = dict(
        study="tiny",
        variants={"l1": ["loss.alpha=0"], "far": ["loss.alpha=0", "model.initial_depth=10"]},
        seeds=[3],
        baseline="l1",
        steps=2,
        common=tiny,
        recipe=recipe,
        out=tmp_path / "out",
    )
    inline = ablation.run_study(results=tmp_path / "one.jsonl", **study)
    shutil.rmtree(tmp_path / "out" / "runs")
    parallel = ablation.run_study(results=tmp_path / "two.jsonl", jobs=2, **study)
    assert sorted(r["variant"] for r in parallel) == ["far", "l1"]
    by_variant = {r["variant"]: r["evaluation"] for r in inline}
    for record in parallel:
        assert record["trained_steps"] == 2
        expected = by_variant[record["variant"]]
        for basis in ("metric", "median"):  # equal up to float sums in another thread count (1 vs 2)
            assert record["evaluation"][basis] == pytest.approx(expected[basis], rel=1e-5)
    assert by_variant["far"]["metric"]["abs_rel"] != pytest.approx(
        by_variant["l1"]["metric"]["abs_rel"], rel=0.1
    )


def test_git_commit_is_dirty_for_changes_outside_the_study_records(tmp_path, monkeypatch):
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "README.md").write_text("x\n")
    git("add", "README.md")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head = git("rev-parse", "HEAD").strip()
    monkeypatch.setattr(ablation, "ROOT", tmp_path)
    (tmp_path / "docs" / "studies").mkdir(parents=True)
    (tmp_path / "docs" / "studies" / "study.jsonl").write_text("{}\n")  # a running study's own records
    assert ablation.git_commit() == head
    (tmp_path / "README.md").write_text("changed\n")
    assert ablation.git_commit() == head + "-dirty"


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie left to a non-reaping PID 1 counts as ended)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_workers_stop_when_the_study_process_is_killed(tmp_path):
    """A --jobs worker busy with a long pair ends within seconds of its parent's SIGKILL, not orphaned."""
    script = f"""
import os, signal, sys, time
sys.path.insert(0, {str(ROOT / "bench")!r})
import ablation
pool = ablation.worker_pool(1)
print(pool.submit(os.getpid).result(), flush=True)
pool.submit(time.sleep, 600)
time.sleep(1)
os.kill(os.getpid(), signal.SIGKILL)
"""
    output = tmp_path / "parent.out"  # a file, not a pipe: an orphaned worker would hold a pipe open
    with output.open("w") as stdout:
        parent = subprocess.run([sys.executable, "-c", script], stdout=stdout, timeout=300)
    assert parent.returncode == -9
    worker = int(output.read_text().split()[0])
    try:
        deadline = time.monotonic() + 30
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(worker), "the worker outlived the killed study process"
    finally:
        if _running(worker):
            os.kill(worker, 9)
