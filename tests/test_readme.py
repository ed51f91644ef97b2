"""The README says what the code does: its config reference is the one the code prints, and
every `tpo ...` command line it shows parses, with the config it names loading."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tpo.cli import build_parser
from tpo.config import load_config, reference

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_readme_config_reference_is_current():
    start = README.index("<!-- config-reference -->\n") + len("<!-- config-reference -->\n")
    end = README.index("\n<!-- /config-reference -->")
    assert README[start:end] == reference(), "run `tpo config --reference` and paste it in README"


def command_lines(text: str) -> list[str]:
    """`tpo ...` lines of the README's code (indented and fenced blocks), continuation lines
    joined, comments cut; synopsis lines (with [optional], a|b or ... parts) and shell-loop
    lines (with $VARIABLES) are left out."""
    code, fenced = [], False
    for raw in text.splitlines():
        if raw.startswith("```"):
            fenced = not fenced
        elif fenced or raw.startswith("    "):
            code.append(raw.strip())
    joined = "\n".join(code).replace("\\\n", " ")
    lines = [line.split("  #", 1)[0].strip() for line in joined.splitlines()]
    return sorted(
        {ln for ln in lines if re.match(r"tpo [a-z]", ln) and not re.search(r"\[|\||\.\.\.|\$", ln)}
    )


COMMANDS = command_lines(README)


def test_the_readme_shows_commands_to_check():
    assert any(c.startswith("tpo run ") and "--set" in c for c in COMMANDS), COMMANDS
    assert any(c.startswith("tpo serve ") for c in COMMANDS), COMMANDS


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_lines_parse(line: str):
    args = build_parser().parse_args(shlex.split(line)[1:])
    if args.command in ("run", "config") and not args.config:  # the config it asks for
        overrides = list(args.set) + ([f"arms={args.arms}"] if getattr(args, "arms", None) else [])
        load_config(None, args.preset, overrides)


def test_set_takes_several_pairs_as_people_type_them():
    parser = build_parser()
    args = parser.parse_args(["run", "--set", "iterations=2", "seed=3", "--set", "arms=tpo"])
    assert args.set == ["iterations=2", "seed=3", "arms=tpo"]
    config = load_config(None, None, args.set)
    assert (config.iterations, config.seed, config.arms) == (2, 3, ["tpo"])
    with pytest.raises(SystemExit):  # --set needs at least one pair
        parser.parse_args(["run", "--set"])
