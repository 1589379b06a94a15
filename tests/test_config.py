"""Loading the training config: YAML and ``--set`` layered onto the defaults, values checked at load time."""

import pytest
import yaml

from ssim_depth_core.config import config_differences, load_config, to_dict
from ssim_depth_core.losses.objective import Objective

DEFAULT_WEIGHTS = {"photometric": 1.0, "smoothness": 1e-3}


def test_a_dotted_override_changes_one_loss_weight_and_keeps_the_others():
    config = load_config(None, ["loss.weights.velocity=0.05"])
    assert config.loss.weights == {**DEFAULT_WEIGHTS, "velocity": 0.05}


def test_a_yaml_file_merges_into_the_defaults_section_by_section(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("loss:\n  alpha: 0.5\n  weights: {photometric: 1.0, velocity: 0.05}\n")
    config = load_config(path, ["loss.weights.smoothness=0.01"])
    # the file's weights replace the default ones (smoothness off), a dotted --set adds to them
    assert config.loss.weights == {"photometric": 1.0, "velocity": 0.05, "smoothness": 0.01}
    assert (config.loss.alpha, config.loss.ssim_form) == (0.5, "additive")  # the rest of loss: defaults
    assert load_config(path).loss.weights == {"photometric": 1.0, "velocity": 0.05}


def test_a_runs_own_config_yaml_loads_back_to_the_same_config(tmp_path):
    """What the trainer writes (to_dict, YAML) and --resume or a new run reads back: a run trained on one
    weight keeps exactly that one."""
    config = load_config(None, ["loss.weights={supervised: 1.0}", "optim.epochs=3"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    assert load_config(path) == config
    assert config_differences(to_dict(config), to_dict(load_config(None))) == [
        "loss.weights: {'supervised': 1.0} -> {'photometric': 1.0, 'smoothness': 0.001}",
        "optim.epochs: 3 -> 20",
    ]


def test_weight_zero_removes_a_term_and_a_mapping_value_replaces_the_whole_mapping():
    config = load_config(None, ["loss.weights.photometric=0", "loss.weights.velocity=0.05"])
    objective = Objective(config.loss, frame_ids=[0, -1, 1], scales=[0])
    assert objective.weights == {"smoothness": 1e-3, "velocity": 0.05}
    assert load_config(None, ["loss.weights={supervised: 1.0}"]).loss.weights == {"supervised": 1.0}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("checkpoint_every=0", "config 'checkpoint_every' must be >= 1, got 0"),
        ("log_every=0", "config 'log_every' must be >= 1, got 0"),
        ("preview_every=-5", "config 'preview_every' must be >= 1, got -5"),
        ("optim.lr_step_epochs=0", "config 'optim.lr_step_epochs' must be >= 1, got 0"),
        ("optim.epochs=0", "config 'optim.epochs' must be >= 1, got 0"),
        ("optim.batch_size=0", "config 'optim.batch_size' must be >= 1, got 0"),
        ("optim.max_steps=-1", "config 'optim.max_steps' must be >= 0, got -1"),
        ("optim.learning_rate=-1", "config 'optim.learning_rate' must be > 0, got -1.0"),
        ("optim.lr_gamma=0", "config 'optim.lr_gamma' must be > 0, got 0.0"),
        ("optim.weight_decay=-1e-4", "config 'optim.weight_decay' must be >= 0, got -0.0001"),
        ("model.min_depth=-1", "config 'model.min_depth' must be > 0, got -1.0"),
        ("model.max_depth=0.05", "config 'model.max_depth' must be > model.min_depth 0.1, got 0.05"),
        ("model.max_depth=.inf", "config 'model.max_depth' must be > 0, got inf"),
        ("loss.alpha=1.5", r"config 'loss.alpha' must be in \[0, 1\], got 1.5"),
        ("loss.occlusion_lambda=-0.5", r"config 'loss.occlusion_lambda' must be in \[0, 1\], got -0.5"),
        ("loss.supervised_l1_weight=-1", "config 'loss.supervised_l1_weight' must be >= 0, got -1.0"),
        ("loss.weights.photometric=-1", "config 'loss.weights.photometric' must be a number >= 0, got -1.0"),
        ("loss.weights.velocity=.nan", "config 'loss.weights.velocity' must be a number >= 0, got nan"),
        ("data.width=0", "config 'data.width' must be >= 1, got 0"),
        ("data.num_workers=-1", "config 'data.num_workers' must be >= 0, got -1"),
        ("data.brightness=1.5", r"config 'data.brightness' must be in \[0, 1\], got 1.5"),
        ("data.flip_probability=-0.1", r"config 'data.flip_probability' must be in \[0, 1\], got -0.1"),
        ("data.hue=0.9", r"config 'data.hue' must be in \[0, 0.5\], got 0.9"),
        (
            "data.height=72",
            r"config 'data.height' and 'data.width' must be multiples of 32 up to 8192 \(.*\), got 72x640",
        ),
        ("data.height=320000", r"config 'data.height' and 'data.width' must be .* got 320000x640"),
        (
            "data.intrinsics=[1,2,3]",
            r"config 'data.intrinsics': expected \[fx, fy, cx, cy, width, height\], got \[1.0, 2.0, 3.0\]",
        ),
        ("data.intrinsics=[500,500,320,96,640.5,192]", "config 'data.intrinsics': .* whole pixels, .*"),
        (
            "data.intrinsics=[500,500,320,96,.inf,192]",
            "config 'data.intrinsics': expected finite numbers, .*",
        ),
        ("data.intrinsics=[500,500,900,96,640,192]", "config 'data.intrinsics': principal point .* image"),
    ],
)
def test_out_of_range_values_are_refused_at_load_time_naming_key_and_value(override, expected):
    with pytest.raises(ValueError, match=f"^{expected}$"):
        load_config(None, [override])


def test_an_override_into_a_key_that_is_not_a_mapping_names_the_override(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("optim:\n  # max_steps: 5\nseed: 3\n")  # an empty section: None
    with pytest.raises(
        ValueError, match=r"^override 'optim.max_steps=5': 'optim' is not a mapping \(got None\)$"
    ):
        load_config(path, ["optim.max_steps=5"])
    with pytest.raises(ValueError, match=r"^override 'seed.value=1': 'seed' is not a mapping \(got 3\)$"):
        load_config(path, ["seed.value=1"])


def test_a_config_or_override_that_is_not_yaml_is_one_error_naming_it(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  scales: [0, 1\n")
    with pytest.raises(ValueError, match=r"^.*broken\.yaml: not a YAML config \(.* at line 3, column 1\)$"):
        load_config(broken)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x82\xff\x00")
    with pytest.raises(ValueError, match=r"binary\.yaml: not a YAML config \('utf-8' codec"):
        load_config(binary)
    with pytest.raises(
        ValueError, match=r"^override 'data.frame_ids=\[0,': its value is not YAML \(.*line 1"
    ):
        load_config(None, ["data.frame_ids=[0,"])
    with pytest.raises(FileNotFoundError, match=f"^config not found: {tmp_path} \\(a folder, not a file\\)$"):
        load_config(tmp_path)
