"""`tpo synth`: the filters by hand, then the tiny random model end to end (its outputs are
noise: the filters must still hold and the file must be a valid instruction file), a resume
after a kill that writes the same file, and a changed config refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tpo.config import SynthConfig, load_config
from tpo.data import DataError, builtin_split, load_instructions
from tpo.data.sources import normalised
from tpo.generate.pool import Generators
from tpo.records import Instruction
from tpo.synth import NearDuplicates, bigrams, extract, synth_prompt, synthesize, verdict

CFG = SynthConfig(min_chars=10, max_chars=80, max_similarity=0.6)


def seen_with(*texts: str) -> NearDuplicates:
    seen = NearDuplicates()
    for text in texts:
        seen.add(text)
    return seen


def test_similarity_is_word_bigram_jaccard():
    """ "write a poem about the sea" and "... the ocean" share 4 of 6 distinct bigrams."""
    assert bigrams("Write a poem about the sea!") == {
        "write a",
        "a poem",
        "poem about",
        "about the",
        "the sea",
    }
    seen = seen_with("Write a poem about the sea.")
    assert seen.similarity("write a poem about the ocean") == pytest.approx(4 / 6)
    assert seen.similarity("List three prime numbers.") == 0.0


@pytest.mark.parametrize(
    ("text", "finished", "expected"),
    [
        ("Name three rivers in Peru.", True, "ok"),
        ("Name three rivers in Peru.", False, "unfinished"),
        ("", True, "empty"),
        ("Say hi.", True, "too_short"),
        ("Describe " + "a very long thing " * 6, True, "too_long"),
        ("I'm sorry, but I can't write that.", True, "refusal"),
        ("As an AI language model, here is a task.", True, "refusal"),
        ("write a POEM about the sea", True, "duplicate"),  # a seed, normalised
        ("Write a poem about the ocean.", True, "near_duplicate"),
    ],
)
def test_each_filter(text, finished, expected):
    assert verdict(text, finished, CFG, seen_with("Write a poem about the sea.")) == expected


def test_extract_and_prompt():
    assert extract("Task 9: Plan a picnic.\n\nTask 10: Another.") == "Plan a picnic."
    assert extract("New instruction - 'Explain tides.'") == "Explain tides."
    assert extract("  Summarise this:\n\nsome text  ") == "Summarise this:\n\nsome text"
    prompt = synth_prompt([Instruction("a", "Say hi."), Instruction("b", "Count to 3.")])
    assert "Task 1: Say hi.\n\nTask 2: Count to 3." in prompt and "2 example tasks" in prompt


def tiny_config(*extra: str):
    return load_config(
        preset="tiny",
        overrides=[
            "synth.seeds=builtin:tiny_train",
            "synth.num_instructions=6",
            "synth.shots=3",
            "synth.batch_size=4",
            "synth.max_new_tokens=20",
            "synth.min_chars=5",
            "synth.drop_unfinished=false",  # a random model rarely ends its answer
            *extra,
        ],
    )


@pytest.mark.slow
def test_tiny_model_end_to_end_then_resume_after_a_kill(tmp_path: Path):
    config = tiny_config()
    out = tmp_path / "synth.jsonl"
    summary = synthesize(config, Generators.for_run(config), out=out)
    written = load_instructions(out)  # a valid instruction file
    assert summary["accepted"] == len(written) == 6
    seeds = builtin_split("tiny_train")
    seed_ids, seed_keys = {s.id for s in seeds}, {normalised(s.text) for s in seeds}
    keys = [normalised(i.text) for i in written]
    assert len(set(keys)) == 6 and not set(keys) & seed_keys
    for instruction in written:
        assert 5 <= len(instruction.text) <= config.synth.max_chars
        assert instruction.provenance is not None
        assert instruction.provenance["model"] == "tiny-random"
        assert instruction.provenance["prompt_version"] == "synth-v1"
        examples = instruction.provenance["examples"]
        assert len(examples) == 3 and set(examples) <= seed_ids
    candidates_path = tmp_path / "synth.jsonl.candidates.jsonl"
    candidates = [json.loads(line) for line in candidates_path.read_text().splitlines()]
    assert summary["candidates"] == len(candidates)
    assert sum(c["verdict"] == "ok" for c in candidates) >= 6
    first = out.read_bytes()

    # A kill during the second batch: its line cut off, the instruction file one batch behind.
    lines = candidates_path.read_text().splitlines(keepends=True)
    candidates_path.write_text("".join(lines[:4]) + lines[4][:30])
    out.unlink()
    again = synthesize(config, Generators.for_run(config), out=out)
    assert out.read_bytes() == first and again == summary


def test_garbage_with_default_filters_stops_at_the_candidate_limit(tmp_path: Path):
    """The tiny model never ends an answer in 20 tokens: every candidate is `unfinished`,
    and the run stops at synth.max_candidates with a valid, empty instruction file."""
    config = tiny_config("synth.drop_unfinished=true", "synth.max_candidates=6")
    out = tmp_path / "none.jsonl"
    summary = synthesize(config, Generators.for_run(config), out=out)
    assert summary["accepted"] == 0 and summary["unfinished"] == summary["candidates"] == 8
    assert out.read_text() == ""


def test_other_settings_on_the_same_file_are_refused(tmp_path: Path):
    config = tiny_config("synth.num_instructions=1", "synth.max_candidates=1", "synth.batch_size=1")
    out = tmp_path / "s.jsonl"
    synthesize(config, Generators.for_run(config), out=out)
    other = replace(config, synth=replace(config.synth, shots=2))
    with pytest.raises(DataError, match=r"other synth settings \(synth differ\)"):
        synthesize(other, Generators.for_run(other), out=out)


@pytest.mark.slow
def test_synth_through_an_openai_compatible_server(tmp_path: Path):
    """`tpo synth` on `generation.backend: openai`, the model served by `tpo serve` that the
    backend starts from its serve_command: a valid instruction file with provenance, the
    filters applied, and no server left once the command ends."""
    import shlex
    import subprocess
    import sys

    serve = f"{shlex.quote(sys.executable)} -m tpo.cli serve {{model}} --port {{port}}"
    out = tmp_path / "synth.jsonl"
    args = [sys.executable, "-m", "tpo.cli", "synth", "--preset", "tiny", "--out", str(out)]
    args += ["--set", "generation.backend=openai", f"generation.openai.serve_command={serve}"]
    args += [
        "synth.num_instructions=3",
        "synth.batch_size=4",
        "synth.shots=3",
        "synth.max_new_tokens=20",
        "synth.min_chars=5",
        "synth.drop_unfinished=false",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = load_instructions(out)
    assert len(written) == 3 and all(i.provenance for i in written)
    assert {i.provenance["model"] for i in written} == {"tiny-random"}  # type: ignore[index]
    assert "accepted: 3" in proc.stdout
    import re

    log = (tmp_path / "serve.log").read_text()
    pids = [int(p) for p in re.findall(r"== tpo: pid (\d+)", log)]
    assert len(pids) == 1  # the backend started one server, logged next to the output
    assert not Path(f"/proc/{pids[0]}").exists()  # and stopped it
