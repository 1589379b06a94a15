"""What a newcomer meets first: the command-line help, and README's quickstart block run verbatim
(synth -> train -> evaluate -> export -> infer on tiny settings).

The lines run in order in one fresh folder (holding a link to the repository's ``training/``), with
``python`` as this interpreter and ``ssim-depth`` as the console script beside it; after each, the verb's
outputs are checked.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ssim_depth_core.apps.cli import build_parser
from ssim_depth_core.evaluation import METRIC_NAMES, RANGE_EDGES

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- quickstart:begin -->\s*```bash\n(.*?)```\s*<!-- quickstart:end -->", re.DOTALL)
PROGRAMS = {"python": sys.executable, "ssim-depth": str(Path(sys.executable).parent / "ssim-depth")}


VERBS = ("synth", "train", "evaluate", "export", "infer")


def test_help_is_plain_text_with_defaults():
    parser = build_parser()
    main_help = parser.format_help()
    assert "``" not in main_help and all(verb in main_help for verb in VERBS)
    (verbs,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    for verb in VERBS:
        text, actions = verbs.choices[verb].format_help(), verbs.choices[verb]._actions
        assert "``" not in text and all(action.help for action in actions), text
        defaults = [a.default for a in actions if a.option_strings and a.default is not argparse.SUPPRESS]
        shown = [d for d in defaults if d is not None and d is not False and d != []]  # 0 is shown
        assert all(f"(default: {d})" in " ".join(text.split()) for d in shown), text
        assert "(default: None)" not in text and "(default: False)" not in text, text
    evaluate_help = verbs.choices["evaluate"].format_help()
    assert re.search(
        r"--backend BACKEND\s+runtime backend: auto .*\(default: auto\)", evaluate_help, re.DOTALL
    )
    assert "--resume | --overwrite" in verbs.choices["train"].format_help()


def quickstart_commands() -> list[list[str]]:
    """The argument lists of the quickstart block's command lines (continuations joined, comments dropped)."""
    match = BLOCK.search((ROOT / "README.md").read_text())
    assert match, (
        "README.md has no ```bash block between <!-- quickstart:begin --> and <!-- quickstart:end -->"
    )
    text = match.group(1).replace("\\\n", " ")
    return [argv for argv in (shlex.split(line, comments=True) for line in text.splitlines()) if argv]


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _verb(argv: list[str]) -> str:
    """``synth`` for ``ssim-depth synth ...``, ``train`` for ``python training/train.py ...``."""
    return argv[1] if argv[0] == "ssim-depth" else Path(argv[1]).stem


def _check_outputs(argv: list[str], stdout: str, cwd: Path) -> None:
    verb = _verb(argv)
    if verb == "synth":
        assert list((cwd / _option(argv, "--out")).glob("splits/*/test_files.txt"))
    elif verb == "train":
        assert (cwd / _option(argv, "--out") / "checkpoints" / "best.pt").is_file()
    elif verb == "evaluate":
        lines = stdout.splitlines()
        headers = [
            i for i, line in enumerate(lines) if [n.strip() for n in line.split("|")] == list(METRIC_NAMES)
        ]
        assert headers, f"no metrics table in:\n{stdout}"  # format_table's header, its values below it
        assert all(0 <= float(value) < 100 for i in headers for value in lines[i + 1].split("|"))
        # the last table: its title, a column header and one row per range bin
        assert lines[-(len(RANGE_EDGES) + 1)].startswith("by ground-truth range")
    elif verb == "export":
        assert (cwd / _option(argv, "--onnx")).stat().st_size > 0
    elif verb == "infer":
        out = cwd / _option(argv, "--out")
        images = list((cwd / _option(argv, "--input")).glob("*.png"))
        summary = json.loads((out / "summary.json").read_text())
        assert isinstance(summary, dict) and summary
        assert len(list((out / "depth").glob("*.png"))) == len(images) > 0
    else:
        pytest.fail(f"README quickstart: no output check for {shlex.join(argv)}")


@pytest.mark.slow
def test_readme_quickstart_runs_verbatim(tmp_path):
    commands = quickstart_commands()
    assert tuple(_verb(argv) for argv in commands) == VERBS
    (tmp_path / "training").symlink_to(ROOT / "training", target_is_directory=True)
    for argv in commands:
        assert argv[0] in PROGRAMS, f"README quickstart: unknown program in {shlex.join(argv)}"
        result = subprocess.run(
            [PROGRAMS[argv[0]], *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, f"{shlex.join(argv)} failed:\n{result.stderr[-4000:]}"
        _check_outputs(argv, result.stdout, tmp_path)
