"""One-line errors: a missing path that is a link, YAML errors from both parsers the project meets."""

import io

import pytest
import yaml
from ruamel.yaml import YAML

from ssim_depth_core.errors import first_line, not_found, yaml_error_in, yaml_error_line


def test_a_missing_file_says_whether_it_is_a_folder_or_a_looping_or_dangling_link(tmp_path):
    loop, dangling = tmp_path / "loop", tmp_path / "dangling"
    loop.symlink_to(loop)
    dangling.symlink_to(tmp_path / "gone.pt")
    assert str(not_found("checkpoint", tmp_path / "x.pt")) == f"checkpoint not found: {tmp_path / 'x.pt'}"
    assert str(not_found("model", tmp_path)) == f"model not found: {tmp_path} (a folder, not a file)"
    assert str(not_found("input", loop)) == f"input not found: {loop} (a symbolic link that loops)"
    assert str(not_found("checkpoint", dangling)) == (
        f"checkpoint not found: {dangling} (a symbolic link to {tmp_path / 'gone.pt'}, which does not exist)"
    )


@pytest.mark.parametrize("parse", [yaml.safe_load, lambda text: YAML(typ="safe").load(io.StringIO(text))])
def test_a_yaml_error_is_one_line_with_its_place_in_either_parser(parse):
    with pytest.raises(Exception) as raised:  # noqa: B017 - each parser raises its own type
        parse("a: 1\nb: [2, 3\n")
    assert yaml_error_in(raised.value) is raised.value
    assert yaml_error_line(raised.value) == "expected ',' or ']', but got '<stream end>' at line 3, column 1"
    try:
        raise ValueError("wrapped") from raised.value
    except ValueError as wrapper:
        assert yaml_error_in(wrapper) is raised.value
        assert yaml_error_in(ValueError("plain")) is None
        assert yaml_error_line(wrapper) == first_line(wrapper) == "wrapped"


def test_first_line_takes_the_message_or_the_type():
    assert first_line(RuntimeError("\n  one\ntwo\n")) == "one"
    assert first_line(KeyError()) == "KeyError"
