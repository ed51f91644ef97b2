"""Run directory: JSONL repair after a crash, config mismatch, the lock."""

import json
import os
import re
import socket
from pathlib import Path

import pytest

from tpo.config import load_config
from tpo.records import Score
from tpo.store import RunDir, StoreError, append_jsonl, read_jsonl


def test_cut_last_line_is_repaired_and_other_bad_lines_are_errors(tmp_path):
    path = tmp_path / "scores.jsonl"
    append_jsonl(path, [Score("a", 0, "v", 1.0).to_dict(), Score("a", 1, "v", 0.0).to_dict()])
    with open(path, "a") as f:
        f.write('{"instruction_id": "a", "ind')  # a writer killed mid-line
    records = read_jsonl(path, Score.from_dict, repair=True)
    assert [r.index for r in records] == [0, 1]
    assert path.read_text().endswith("}\n")  # the cut line is gone from the file
    with open(path, "a") as f:
        f.write("not json\n")
    with pytest.raises(StoreError, match=r"scores\.jsonl:3: malformed JSON"):
        read_jsonl(path, Score.from_dict)


def test_unknown_field_is_named(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({**Score("a", 0, "v", 1.0).to_dict(), "extra": 1}) + "\n")
    with pytest.raises(StoreError, match=r"s\.jsonl:1: unknown field\(s\) for Score: extra"):
        read_jsonl(path, Score.from_dict)


def test_run_dir_refuses_a_different_config(tmp_path):
    run = RunDir.open(tmp_path / "run", load_config(preset="tiny"))
    run.mark_done("data")
    RunDir.open(tmp_path / "run", load_config(preset="tiny"))  # same config: resume is fine
    other = load_config(preset="tiny", overrides=["generation.num_samples=3"])
    with pytest.raises(
        StoreError, match=r"different config: generation\.num_samples \(4 there, 3 now\)"
    ):
        RunDir.open(tmp_path / "run", other)


def test_a_run_dir_where_nothing_finished_takes_the_new_config(tmp_path, capfd):
    """A first run that stopped before any stage finished (a data error, say) does not bind
    its directory to the config that failed; one another process holds still refuses."""
    RunDir.open(tmp_path / "run", load_config(preset="tiny"))
    other = load_config(preset="tiny", overrides=["generation.num_samples=3"])
    with RunDir.load(tmp_path / "run").lock(), pytest.raises(StoreError, match="different"):
        RunDir.open(tmp_path / "run", other)
    assert RunDir.open(tmp_path / "run", other).config.generation.num_samples == 3
    assert RunDir.load(tmp_path / "run").config.generation.num_samples == 3
    assert "no stage of it finished, so its config is replaced" in capfd.readouterr().err


def test_lock_is_exclusive(tmp_path):
    run = RunDir.open(tmp_path / "run", load_config(preset="tiny"))
    with (
        run.lock(),
        pytest.raises(StoreError, match="in use by another tpo process"),
        RunDir.load(tmp_path / "run").lock(),
    ):
        pass


def test_manifest_marks_and_clears(tmp_path):
    run = RunDir.open(tmp_path / "run", load_config(preset="tiny"))
    assert not run.is_done("pairs", "tpo", 1)
    run.mark_done("pairs", "tpo", 1, pairs=3)
    assert run.is_done("pairs", "tpo", 1)
    assert run.manifest()["done"]["tpo/iter_1/pairs"] == {"pairs": 3}
    run.clear("pairs", "tpo", 1)
    assert not run.is_done("pairs", "tpo", 1)


# the judge sections of a config.yaml saved before each judge type had its own section
OLD_FLAT_JUDGE = {
    "type": "pairwise",
    "model": "judge-model",
    "backend": "openai",
    "base_url": "http://127.0.0.1:9/v1",
    "api_key_env": "OPENAI_API_KEY",
    "concurrency": 3,
    "max_retries": 4,
    "retry_backoff_s": 1.0,
    "timeout_s": 60.0,
    "pairs_per_sample": 2,
    "max_new_tokens": 512,
    "batch_size": 8,
    "max_length": 4096,
    "dtype": "auto",
    "device": "auto",
    "trust_remote_code": False,
    "cache": True,
    "cache_path": None,
}


def test_a_run_directory_saved_with_flat_judge_keys_still_resumes(tmp_path):
    """Run directories made before the judge sections were split keep working: their saved
    config (flat judge keys, `eval_judge` of type same with every default) is read into the
    new sections, compares equal to the same config written today, and loads."""
    import yaml

    today = load_config(
        preset="tiny",
        overrides=[
            "judge.type=pairwise",
            "judge.llm.model=judge-model",
            "judge.llm.backend=openai",
            "judge.llm.openai.base_url=http://127.0.0.1:9/v1",
            "judge.llm.openai.concurrency=3",
            "judge.pairwise.pairs_per_sample=2",
        ],
    )
    old = today.to_dict()
    old["judge"] = OLD_FLAT_JUDGE
    old["eval_judge"] = {**OLD_FLAT_JUDGE, "type": "same", "model": None, "backend": "local"}
    old["eval_judge"] |= {"base_url": None, "concurrency": 8, "pairs_per_sample": None}
    root = tmp_path / "old-run"
    root.mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump(old))
    (root / "manifest.json").write_text('{"done": {"data": {}}}')  # a run under way
    assert RunDir.open(root, today).config == today  # resumes: no "different config"
    assert RunDir.load(root).config == today
    other = load_config(preset="tiny", overrides=["judge.type=verifier"])
    with pytest.raises(StoreError, match=r"different config: judge\.llm\.backend"):
        RunDir.open(root, other)


def test_a_torn_batch_is_cut_to_the_last_whole_append(tmp_path, capfd):
    """A kill mid-append can end on a newline with part of a batch written: what lies past the
    committed length goes, whole-looking lines included, and the warning names the file."""
    path = tmp_path / "samples.jsonl"
    append_jsonl(path, [Score("a", k, "v", 1.0).to_dict() for k in range(2)])
    whole = path.read_bytes()
    with open(path, "ab") as f:  # half of the next batch: one whole line, one cut
        f.write(json.dumps(Score("b", 0, "v", 0.5).to_dict()).encode() + b'\n{"instr')
    assert [r.index for r in read_jsonl(path, Score.from_dict, repair=True)] == [0, 1]
    assert path.read_bytes() == whole
    err = capfd.readouterr().err
    assert f"{path}: removed " in err and "bytes after its last complete write" in err
    append_jsonl(path, [Score("b", 0, "v", 0.5).to_dict()])  # the batch made again
    assert len(read_jsonl(path, Score.from_dict, repair=True)) == 3
    assert capfd.readouterr().err == ""  # whole: nothing to repair


def test_a_garbage_last_line_is_cut_and_a_bad_middle_line_is_an_error(tmp_path, capfd):
    path = tmp_path / "train.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n\x00\x00 not json\n')  # no sidecar: written whole
    assert read_jsonl(path, dict, repair=True) == [{"a": 1}, {"a": 2}]
    assert f"{path}: removed an unreadable last line (line 3)" in capfd.readouterr().err
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(StoreError, match=r"train\.jsonl:2: malformed JSON"):
        read_jsonl(path, dict, repair=True)  # never dropped, repair or not
    assert path.read_text().count("\n") == 3


def test_the_lock_names_its_holder_and_a_dead_holder_is_taken_over(tmp_path, capfd):
    run = RunDir.open(tmp_path / "run", load_config(preset="tiny"))
    (run.root / ".lock").write_text("pid 999999 on gone-host\n")  # a killed run's lock file
    holder = f"pid {os.getpid()} on {socket.gethostname()}"
    with run.lock():
        assert "taking over the lock of pid 999999 on gone-host" in capfd.readouterr().err
        assert (run.root / ".lock").read_text() == holder + "\n"
        refused = pytest.raises(StoreError, match=re.escape(f"another tpo process ({holder})"))
        with refused, RunDir.load(run.root).lock():
            pass
    assert (run.root / ".lock").read_text() == ""  # released: held by nobody


def test_a_damaged_file_of_a_done_stage_makes_that_stage_run_again(tmp_path: Path):
    """Files named by a pattern (eval_try1_samples.jsonl, math-*) or inside a stage's folder
    (select/...) are matched to their stage, as plain names (samples.jsonl) are."""
    from tpo import pipeline
    from tpo.config import config_from_dict

    run = RunDir.open(tmp_path / "run", config_from_dict({"model": {"name_or_path": "x"}}))
    cases = [
        ("eval", "eval_try1_samples.jsonl"),
        ("select", "select/epoch_1_samples.jsonl"),
        ("generate", "samples.jsonl"),
        ("math", "math-0a1b_samples.jsonl"),  # the eval suite's math outputs
        ("train", "sft_log.jsonl"),  # the SFT warm-up's log: the warm-up is redone too
    ]
    sft_done = run.iter_dir("tpo", 1) / "sft.json"
    for stage, name in cases:
        path = run.iter_dir("tpo", 1) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"a": 1}\n{"a": 2')  # a cut-off last line
        run.mark_done(stage, "tpo", 1)
    sft_done.write_text("{}")
    pipeline.recover(run)
    for stage, name in cases:
        assert not run.is_done(stage, "tpo", 1), name
        assert (run.iter_dir("tpo", 1) / name).read_text() == '{"a": 1}\n'
    assert not sft_done.exists()


def test_recover_reads_every_line_of_every_file_and_changes_nothing_on_a_bad_one(tmp_path):
    """A corrupted middle line in a file no stage reads again is found when a run resumes:
    an error naming file and line, raised before anything is repaired or removed. A bad last
    line (even one within the committed length) is repaired, as before."""
    run = RunDir.open(tmp_path / "run", load_config(preset="tiny"))
    scores = run.iter_dir("tpo", 1) / "scores.jsonl"
    append_jsonl(scores, [Score("a", k, "v", 1.0).to_dict() for k in range(3)])
    lines = scores.read_bytes().splitlines(keepends=True)
    scores.write_bytes(lines[0] + b'{"instruction_id": "a", "ind\n' + lines[2])  # same length
    torn = run.iter_dir("direct", 1) / "samples.jsonl"
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b'{"a": 1}\n{"a": ')
    leftover = run.root / ".manifest.json.tmp"
    leftover.write_text("{")
    before = {p: p.read_bytes() for p in run.root.rglob("*") if p.is_file()}
    with pytest.raises(StoreError, match=re.escape(f"{scores}:2: malformed JSON")):
        run.recover()
    assert {p: p.read_bytes() for p in run.root.rglob("*") if p.is_file()} == before
    scores.write_bytes(b"".join(lines))
    assert run.recover() == [torn] and not leftover.exists()
    scores.write_bytes(b"".join(lines[:2]) + b"garbage\n")  # the last line, committed
    assert run.recover() == [scores] and scores.read_bytes() == b"".join(lines[:2])


def test_a_run_with_another_config_on_a_busy_directory_names_the_holder(tmp_path):
    RunDir.open(tmp_path / "run", load_config(preset="tiny"))
    other = load_config(preset="tiny", overrides=["generation.num_samples=3"])
    holder = f"pid {os.getpid()} on {socket.gethostname()}"
    with RunDir.load(tmp_path / "run").lock(), pytest.raises(StoreError) as info:
        RunDir.open(tmp_path / "run", other)
    assert f"in use by another tpo process ({holder})" in str(info.value)
    assert "also made with a different config: generation.num_samples (4 there, 3 now)" in str(
        info.value
    )


def test_the_training_settings_may_change_until_a_training_finished(tmp_path, capfd):
    """A first training stopped by a NaN loss: the run resumes with a lower learning rate.
    Once a training finished, its settings are the run's."""
    run = RunDir.open(tmp_path / "run", load_config(preset="tiny"))
    run.mark_done("pairs", "tpo", 1)
    lower = load_config(preset="tiny", overrides=["train.learning_rate=1e-7"])
    assert RunDir.open(run.root, lower).config.train.learning_rate == 1e-7
    assert "no training of it finished, so its config is replaced" in capfd.readouterr().err
    with pytest.raises(StoreError, match=r"different config: generation\.num_samples"):
        RunDir.open(run.root, load_config(preset="tiny", overrides=["generation.num_samples=3"]))
    run.mark_done("train", "tpo", 1)
    with pytest.raises(StoreError, match=r"different config: train\.learning_rate"):
        RunDir.open(run.root, load_config(preset="tiny"))
