"""The evaluation suite on a synthetic run directory: head-to-head, reference files, math,
LLM categories, exports, TensorBoard / W&B, and the `tpo eval` options. No model is loaded:
outputs are written by hand, and generation goes through a fake generator."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakes import FakeModels, NoModels, ScriptedVerdicts, write_verified_eval
from tpo import cli
from tpo.config import ConfigError, config_from_dict
from tpo.eval import suite
from tpo.eval.categories import categories_of
from tpo.eval.compare import against_reference, head_to_head, run_comparer
from tpo.eval.export import export_responses
from tpo.eval.lc import length_controlled_win_rate
from tpo.eval.math_eval import math_accuracy
from tpo.eval.metrics import score_map
from tpo.eval.results import curve_table, results, results_table, write_results
from tpo.eval.tracking import track
from tpo.generate.pool import Generators
from tpo.pipeline import run_all
from tpo.records import Instruction
from tpo.report import write_report
from tpo.store import RunDir, read_jsonl, write_jsonl
from tpo.thoughts import thought_format

HELDOUT = [
    Instruction("h1", "Greet me in lowercase.", "poem", [{"type": "lowercase"}]),
    Instruction("h2", "End with Bye.", "poem", [{"type": "ends_with", "phrase": "Bye."}]),
    Instruction("h3", "List two letters, no commas.", "letter", [{"type": "no_commas"}]),
    Instruction("h4", "Name a pet.", "letter", [{"type": "keywords_include", "keywords": ["cat"]}]),
]
R = "\nHere is my response:\n"
OUTPUTS = {  # (arm, iteration) -> output per held-out instruction, as the model wrote it
    ("direct", 0): ["Hello", "ok", "a, b", "cat"],
    ("tpo", 0): [f"Hm.{R}Hello", f"Hm.{R}ok", f"Hm.{R}a, b", f"Hm.{R}cat"],
    ("direct", 1): ["Hello", "ok Bye.", "a, b", "cat"],
    ("tpo", 1): [f"Think.{R}hello there", f"Plan.{R}ok Bye.", "no marker at all", f"Hmm.{R}no"],
}


def make_run(root: Path, **eval_cfg: object) -> RunDir:
    """A finished two-arm, one-iteration run: held-out outputs, scores and eval.json for
    every arm and iteration, as `tpo run` leaves them."""
    config = config_from_dict(
        {"arms": ["tpo", "direct"], "iterations": 1, "model": {"name_or_path": "fake"}}
        | {"eval": dict(eval_cfg)}
    )
    run = RunDir.open(root, config)
    write_jsonl(root / "data" / "heldout.jsonl", (i.to_dict() for i in HELDOUT))
    run.mark_done("data", train=0, heldout=len(HELDOUT))
    baseline = None
    for (arm, t), outputs in OUTPUTS.items():
        fmt = thought_format(arm, config.prompt)
        scores = write_verified_eval(run, arm, t, HELDOUT, outputs, fmt, baseline)
        baseline = baseline or score_map(scores)
        if t == 1:
            run.mark_done("train", arm, t, skipped="no pairs")  # M_1 = the seed ("fake")
    return run


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    return make_run(tmp_path / "run")


def test_head_to_head_hand_computed(run: RunDir):
    """Iteration 1, verifier scores tpo vs direct: h1 1 vs 0 -> 1; h2 1 vs 1 -> 0.5; h3 tpo
    failed to parse -> 0; h4 0 vs 1 -> 0. Win rate 1.5 / 4 = 0.375; deviations .625, .125,
    -.375, -.375, squares sum to 0.6875, SE = sqrt(0.6875 / 3 / 4) = 0.239357.
    Per category: poem (h1, h2) 0.75, letter (h3, h4) 0.0."""
    out = head_to_head(run, run_comparer(run), arm="tpo", other="direct", iteration=1)
    assert out["win_rate"] == 0.375
    assert out["se"] == pytest.approx(math.sqrt(0.6875 / 12))
    assert (out["n"], out["wins"], out["ties"], out["losses"]) == (4, 1, 1, 2)
    assert out["categories"]["poem"]["win_rate"] == 0.75
    assert out["categories"]["letter"]["win_rate"] == 0.0
    assert out["categories"]["letter"]["n"] == 2
    assert out["preferences"] == {"h1": 1.0, "h2": 0.5, "h3": 0.0, "h4": 0.0}
    saved = json.loads((run.iter_dir("tpo", 1) / "h2h_vs_direct.json").read_text())
    assert saved["win_rate"] == 0.375 and saved["judge"] == "verifier"
    # length-controlled: tpo's response lengths "hello there", "ok Bye.", none (parse failure),
    # "no" against direct's "Hello", "ok Bye.", "a, b", "cat", in that order
    lc = length_controlled_win_rate([1.0, 0.5, 0.0, 0.0], [11, 7, 0, 2], [5, 7, 4, 3])
    assert lc.lc_win_rate is not None
    assert saved["lc_win_rate"] == pytest.approx(lc.lc_win_rate)
    assert "lc_se" in saved and saved["lc_se"] == lc.lc_se  # None: no difficulty term
    # the longer tpo response won here, so the length weight is positive; with the two
    # sides' lengths swapped it would be negative
    assert lc.weights["length"] > 0
    assert saved["lc_weights"] == pytest.approx(lc.weights)


def test_after_run_adds_head_to_head_to_results_once(run: RunDir):
    """Iteration 0: the same responses on both sides, every pair ties -> 0.5."""
    suite.after_run(run, NoModels())
    rows = {(r["arm"], r["iteration"]): r for r in results(run)}
    assert rows[("tpo", 1)]["h2h_vs_direct"] == 0.375
    assert rows[("tpo", 0)]["h2h_vs_direct"] == 0.5
    assert rows[("tpo", 0)]["h2h_vs_direct_se"] == 0.0
    assert rows[("direct", 1)]["h2h_vs_direct"] is None
    lc = json.loads((run.iter_dir("tpo", 1) / "h2h_vs_direct.json").read_text())["lc_win_rate"]
    assert lc is not None and rows[("tpo", 1)]["h2h_vs_direct_lc"] == lc
    assert rows[("direct", 1)]["h2h_vs_direct_lc"] is None
    assert "vs_direct" in results_table(list(rows.values())).split()
    assert "lc_vs_direct" in results_table(list(rows.values())).split()
    assert "math" not in results_table(list(rows.values())).split()  # no math was run
    path = run.iter_dir("tpo", 1) / "h2h_vs_direct.json"
    path.write_text('{"win_rate": 0.123}')
    suite.after_run(run, NoModels())  # done: not judged again
    assert json.loads(path.read_text()) == {"win_rate": 0.123}


def test_against_reference_reuses_heldout_outputs(run: RunDir, tmp_path: Path):
    """Reference outputs: h1 "HELLO" (0), h2 "ok Bye." (1), h3 "a b" (1), h4 "dog" (0). tpo at
    iteration 1: h1 1 vs 0 -> 1; h2 1 vs 1 -> 0.5; h3 no response -> 0; h4 0 vs 0 -> 0.5.
    Win rate 2 / 4 = 0.5. Held-out outputs are reused: no model is loaded."""
    ref = tmp_path / "reference.json"
    outs = ["HELLO", "ok Bye.", "a b", "dog"]
    ref.write_text(
        json.dumps(
            [
                {"instruction": i.text, "output": o, "generator": "gpt-x"}
                for i, o in zip(HELDOUT, outs, strict=True)
            ]
        )
    )
    out = against_reference(run, NoModels(), run_comparer(run), ref, arm="tpo", iteration=1)
    assert out["win_rate"] == 0.5
    assert out["preferences"] == {"h1": 1.0, "h2": 0.5, "h3": 0.0, "h4": 0.5}
    assert out["generator"] == "gpt-x"
    assert 0 < out["lc_win_rate"] < 1
    assert (run.iter_dir("tpo", 1) / "vs_reference.json").is_file()


class LongerWins:
    name = "longer"

    def compare(self, items):
        return [1.0 if len(a) > len(b) else 0.5 if len(a) == len(b) else 0.0 for _, a, b in items]


def test_against_reference_generates_outputs_for_new_instructions(run: RunDir, tmp_path: Path):
    """Instructions outside the held-out split: the model (a fake, answering "a short answer"
    after a thought) is asked once per instruction, and a second call reuses the file. Against
    references "x" (shorter) and "a much longer reference" the longer-wins judge gives 1 and 0."""
    ref = tmp_path / "alpaca.json"
    ref.write_text(
        json.dumps(
            [
                {"instruction": "New question one?", "output": "x", "generator": "ref"},
                {
                    "instruction": "New question two?",
                    "output": "a much longer reference",
                    "generator": "ref",
                },
            ]
        )
    )
    models = FakeModels(f"Let me think.{R}a short answer")
    out = against_reference(run, models, LongerWins(), ref, arm="tpo", iteration=1)
    assert out["preferences"] == {"alpaca-0001": 1.0, "alpaca-0002": 0.0}
    assert models.paths == ["fake"]  # M_1 is the seed here (training was skipped)
    assert len(models.gen.prompts) == 2 and "New question one?" in models.gen.prompts[0]
    assert "Here is my thought process:" in models.gen.prompts[0]  # the tpo arm's prompt
    files = list(run.iter_dir("tpo", 1).glob("ref-*_samples.jsonl"))
    assert len(files) == 1
    against_reference(run, models, LongerWins(), ref, arm="tpo", iteration=1)
    assert len(models.gen.prompts) == 2  # resumed from the file


def test_math_accuracy_with_a_fake_model(run: RunDir, tmp_path: Path):
    """Gold answers 42, 7, 42; the fake model always answers 42 after its thought: 2 / 3.
    The question carries the paper's answer-only suffix."""
    path = tmp_path / "gsm.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"question": f"Q{k}?", "answer": a}) for k, a in enumerate([42, 7, 42])
        )
    )
    models = FakeModels(f"Six times seven.{R}42")
    out = math_accuracy(run, models, str(path), arm="tpo", iteration=1)
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert [it["predicted"] for it in out["items"]] == [42.0, 42.0, 42.0]
    assert "Q0? Output only the number answer." in models.gen.prompts[0]
    assert json.loads((run.iter_dir("tpo", 1) / "math.json").read_text())["n"] == 3


def test_math_in_after_run_when_configured(tmp_path: Path):
    run = make_run(tmp_path / "run", math_set="builtin:3", math_suffix="")
    models = FakeModels("The answer is 5.")
    suite.after_run(run, models)
    rows = results(run)
    assert all(r["math_accuracy"] is not None for r in rows)
    assert run.is_done("math", "direct", 0) and run.is_done("math", "tpo", 1)
    assert "math" in results_table(rows).split()


def test_llm_categories_are_assigned_once(tmp_path: Path):
    run = make_run(tmp_path / "run", category_classifier="seed")
    models = FakeModels("Category: Health")
    cats = categories_of(run, models, HELDOUT)
    assert cats == {i.id: "Health" for i in HELDOUT}
    assert "Which category" in models.gen.prompts[0] and "Name a pet." in models.gen.prompts[3]
    assert models.paths == ["fake"]  # "seed" = the run's model
    assert categories_of(run, NoModels(), HELDOUT) == cats  # from data/categories.json
    out = head_to_head(
        run, run_comparer(run), arm="tpo", other="direct", iteration=1, models=NoModels()
    )
    assert list(out["categories"]) == ["Health"] and out["categories"]["Health"]["n"] == 4


def test_export_heldout_outputs(run: RunDir, tmp_path: Path):
    files = export_responses(run, NoModels(), tmp_path / "exp", arm="tpo", iteration=1)
    alpaca = json.loads(files[0].read_text())
    assert [r["output"] for r in alpaca] == ["hello there", "ok Bye.", "", "no"]
    assert alpaca[0]["generator"] == "run-tpo-iter1"


def test_tensorboard_logs_each_value_once(tmp_path: Path, capsys):
    """`tpo eval` logs the results rows; the end of a (resumed) run logs only what is new
    (the head-to-head); a third call logs nothing. Every (tag, step) appears once."""
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install tpo[eval])")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = make_run(tmp_path / "run", report_to="tensorboard")
    assert cli.main(["eval", str(run.root), "--arm", "tpo", "--iteration", "1"]) == 0
    assert (run.root / "tensorboard").is_dir()  # `tpo eval` logged
    suite.after_run(run, NoModels())
    # tpo's head-to-head at iterations 0 and 1: win rate, se, its interval's ends, lc
    assert track(run, results(run)) == 10
    assert track(run, results(run)) == 0
    acc = EventAccumulator(str(run.root / "tensorboard"))
    acc.Reload()
    h2h = [(e.step, e.value) for e in acc.Scalars("tpo/h2h_vs_direct")]
    assert sorted(h2h) == [(0, 0.5), (1, 0.375)]
    mean = [(e.step, e.value) for e in acc.Scalars("direct/mean_score")]
    assert sorted(s for s, _ in mean) == [0, 1]  # logged by `tpo eval`, not again


def test_wandb_offline(run: RunDir, monkeypatch, tmp_path: Path):
    """Our code puts W&B offline: no WANDB_MODE in the environment (and no API key), yet the
    run is written as an offline run under RUN/wandb; a second call has nothing new to log."""
    pytest.importorskip("wandb", reason="wandb not installed (pip install wandb)")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED", "WANDB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    run = RunDir(
        run.root, config_from_dict(run.config.to_dict() | {"eval": {"report_to": "wandb"}})
    )
    assert track(run, results(run)) > 0
    runs = list((run.root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = list(runs[0].glob("run-*.wandb"))
    assert len(files) == 1
    assert b"tpo/mean_score" in files[0].read_bytes()
    assert track(run, results(run)) == 0
    assert len(list((run.root / "wandb").glob("offline-run-*"))) == 1


def test_missing_tracker_package_is_a_config_error(run: RunDir, monkeypatch):
    from tpo.eval import tracking

    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"eval\.report_to: wandb is not installed"):
        tracking.make_tracker("wandb", run.root, "x", {})


def tpo(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "tpo.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_cli_eval_options_and_report(run: RunDir, tmp_path: Path):
    proc = tpo(
        "eval", str(run.root), "--arm", "tpo", "--iteration", "1", "--against-arm", "direct",
        "--export", str(tmp_path / "exp"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "h2h_vs_direct:" in proc.stdout and "win_rate: 0.375" in proc.stdout
    assert (tmp_path / "exp" / "arena-hard-v0.1" / "question.jsonl").is_file()
    rows = json.loads((run.root / "results.json").read_text())
    assert [r["h2h_vs_direct"] for r in rows if r["arm"] == "tpo"] == [None, 0.375]
    proc = tpo("report", str(run.root))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(run.root / "report.html")
    assert "<img" in (run.root / "report.html").read_text()
    proc = tpo("eval", str(run.root), "--questions", "q.jsonl")
    assert proc.returncode == 2 and "tpo: error: --questions goes with --export" in proc.stderr
    samples = read_jsonl(run.iter_dir("tpo", 1) / "eval_samples.jsonl", lambda d: d)
    assert len(samples) == 4  # the held-out outputs were reused, not regenerated


def test_run_all_adds_head_to_head_and_writes_the_report(run: RunDir, capsys):
    """`tpo run` on a run whose every stage is done: no model is loaded, and the end of the
    loop adds tpo vs direct per iteration to results.json and writes report.html."""
    for arm in ("tpo", "direct"):
        for stage in ("generate", "judge", "pairs"):
            run.mark_done(stage, arm, 1)
    rows = run_all(run)
    assert [r["h2h_vs_direct"] for r in rows] == [None, None, 0.5, 0.375]
    assert json.loads((run.root / "results.json").read_text()) == rows
    assert f"report: {run.root / 'report.html'}" in capsys.readouterr().err
    assert (run.root / "report.html").stat().st_size > 10_000


def one_sided() -> ScriptedVerdicts:
    """ "A" whenever tpo's response is shown first, "tie" when direct's is: one order a win,
    the other a tie."""
    return ScriptedVerdicts("one-sided", lambda a, b: "A" if a in ("hello there", "no") else "tie")


def test_pairwise_llm_judge_gives_a_verdict_per_order(run: RunDir, monkeypatch):
    """judge.type pairwise: each order's verdict counts (A 1, B 0, tie 0.5), not a
    Bradley-Terry fit of two responses, which would make win + tie a full win (1.0).
    h1 and h4: tpo first "A" (1), direct first "tie" (0.5) -> 0.75; h2: identical responses
    tie without a call; h3: tpo failed to parse -> 0. Win rate 2.0 / 4 = 0.5."""
    backend = one_sided()
    monkeypatch.setattr("tpo.judge.build.llm_backend", lambda cfg, generation: backend)
    judge_cfg = {"type": "pairwise", "llm": {"model": "some-judge"}, "cache": False}
    run = RunDir(run.root, config_from_dict(run.config.to_dict() | {"judge": judge_cfg}))
    out = head_to_head(run, run_comparer(run), arm="tpo", other="direct", iteration=1)
    assert out["preferences"] == {"h1": 0.75, "h2": 0.5, "h3": 0.0, "h4": 0.75}
    assert out["win_rate"] == 0.5 and out["judge"] == "pairwise:one-sided"
    assert backend.calls == 4  # two pairs, both orders


def test_verifier_against_references_without_constraints_is_one_line(run: RunDir, capsys):
    """Reference instructions carry no constraints, so the verifier can judge none of them:
    a one-line error naming the judge and why, not a win rate of None (nor one made of the
    parse failure of h3 alone). Three instructions were sent to the judge (h1, h2, h4)."""
    heldout = [
        {**ins.to_dict(), "constraints": []}
        for ins in HELDOUT  # the same texts, so the held-out outputs are reused
    ]
    write_jsonl(run.root / "data" / "heldout.jsonl", heldout)
    ref = run.root.parent / "ref.json"
    refs = [{"instruction": i.text, "output": "x", "generator": "g"} for i in HELDOUT]
    ref.write_text(json.dumps(refs))
    args = ["eval", str(run.root), "--arm", "tpo", "--iteration", "1", "--against", str(ref)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err == (
        "tpo: error: judge verifier scored none of the 3 instructions (they carry no "
        "constraints); set judge.type to pairwise/pointwise/reward_model\n"
    )
    assert not (run.iter_dir("tpo", 1) / "vs_ref.json").exists()


def test_redo_eval_clears_what_compared_the_old_outputs(tmp_path: Path, monkeypatch):
    """After head-to-heads and math, `tpo eval --redo` of direct/iter_1 removes tpo/iter_1's
    head-to-head against it and direct/iter_1's math (files, outputs and manifest entries);
    results.json no longer shows them. tpo/iter_1's own math stays until its eval is redone."""
    run = make_run(tmp_path / "run", math_set="builtin:3", math_suffix="")
    suite.after_run(run, FakeModels("The answer is 5."))
    direct1, tpo1 = run.iter_dir("direct", 1), run.iter_dir("tpo", 1)
    assert (tpo1 / "h2h_vs_direct.json").is_file() and (direct1 / "math.json").is_file()
    assert list(direct1.glob("math-*_samples.jsonl"))
    fake = FakeModels("Hello")
    monkeypatch.setattr(Generators, "generator", lambda self, path, bs: fake.generator(path, bs))
    args = ["eval", str(run.root), "--arm", "direct", "--iteration", "1", "--redo"]
    assert cli.main(args) == 0
    assert len(fake.gen.prompts) == len(HELDOUT)  # the held-out outputs were made again
    assert not (tpo1 / "h2h_vs_direct.json").exists()
    assert not run.is_done("h2h_vs_direct", "tpo", 1)
    assert not (direct1 / "math.json").exists() and not run.is_done("math", "direct", 1)
    assert not list(direct1.glob("math-*_samples.jsonl"))
    assert run.is_done("h2h_vs_direct", "tpo", 0)  # iteration 0 is untouched
    assert (tpo1 / "math.json").is_file() and run.is_done("math", "tpo", 1)
    rows = {
        (r["arm"], r["iteration"]): r for r in json.loads((run.root / "results.json").read_text())
    }
    assert rows[("tpo", 1)]["h2h_vs_direct"] is None
    assert rows[("direct", 1)]["math_accuracy"] is None
    assert rows[("tpo", 1)]["math_accuracy"] is not None
    assert cli.main(["eval", str(run.root), "--arm", "tpo", "--iteration", "1", "--redo"]) == 0
    assert not (tpo1 / "math.json").exists() and not run.is_done("math", "tpo", 1)


def test_export_with_questions_keeps_their_benchmark_fields(run: RunDir, tmp_path: Path):
    """--questions in AlpacaEval format (the held-out texts, so no model is needed): each
    question's `dataset` is kept where it has one; Arena-Hard gets its default categories."""
    questions = tmp_path / "alpaca.json"
    records = [{"instruction": i.text, "output": "", "generator": "g"} for i in HELDOUT]
    records[0]["dataset"] = "helpful_base"
    questions.write_text(json.dumps(records))
    files = export_responses(run, NoModels(), tmp_path / "exp", questions, arm="tpo", iteration=1)
    alpaca = json.loads(files[0].read_text())
    assert [r["dataset"] for r in alpaca] == ["helpful_base", "tpo", "tpo", "tpo"]
    v2 = tmp_path / "exp" / "arena-hard-v2.0" / "question.jsonl"
    assert {json.loads(line)["category"] for line in v2.read_text().splitlines()} == {"hard_prompt"}


def longer_is_better() -> ScriptedVerdicts:
    """The longer response wins; equal lengths tie."""
    return ScriptedVerdicts(
        "longer", lambda a, b: "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"
    )


def test_pairwise_eval_judge_shows_no_scores_and_judges_win_rates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Under a pairwise eval judge one held-out output per prompt has nothing to be compared
    with, so no mean score, error or pass rate is computed (they were Elo 1000, 1.0 before):
    they are None, shown as "-" with the reason under the table. The win rates against the
    seed are the judge's verdicts in both orders: tpo's longer answers win all 4 prompts in
    both orders (1.0), with 2 calls per prompt."""
    from tpo.eval.heldout import evaluate

    backend = longer_is_better()
    monkeypatch.setattr("tpo.judge.build.llm_backend", lambda cfg, generation: backend)
    config = config_from_dict(
        {
            "arms": ["tpo", "direct"],
            "model": {"name_or_path": "fake"},
            "eval_judge": {"type": "pairwise", "llm": {"model": "judge"}, "cache": False},
        }
    )
    run = RunDir.open(tmp_path / "run", config)
    write_jsonl(run.root / "data" / "heldout.jsonl", (i.to_dict() for i in HELDOUT))
    run.mark_done("data", train=0, heldout=len(HELDOUT))
    seed = evaluate(run, FakeModels("ok"), arm="direct", iteration=0)
    assert backend.calls == 0  # the baseline against itself needs no judge
    tpo0 = evaluate(run, FakeModels(f"Hm.{R}a longer answer"), arm="tpo", iteration=0)
    assert backend.calls == 2 * len(HELDOUT)
    for metrics in (seed, tpo0):
        assert metrics["mean_score"] is None and metrics["pass_rate"] is None
        assert metrics["score_se"] is None and "pairwise eval judge" in metrics["notes"][0]
    assert seed["win_rate"] == 0.5 and tpo0["win_rate"] == 1.0
    assert not (run.iter_dir("tpo", 0) / "eval_scores.jsonl").exists()  # nothing was scored
    table = results_table(results(run))
    assert table.splitlines()[1].split()[2:4] == ["-", "-"]  # score (± its interval), pass
    assert table.splitlines()[-1].startswith("note: score (with its interval), pass and the")
    write_results(run)
    assert "pass and the paired differences are &#x27;-&#x27;" in write_report(run.root).read_text()


def test_results_have_the_papers_intervals_derived_by_hand(run: RunDir):
    """Verifier scores per held-out prompt (h1..h4): direct/0 [0, 0, 0, 1], tpo/0 [0, 0, 0, 1],
    direct/1 [0, 1, 0, 1], tpo/1 [1, 1, 0, 0] (h3 failed to parse: 0). With n = 4, t(3) =
    3.182:
    - tpo/1 score 0.5, sd 0.57735, se 0.288675, half-width 0.918565;
    - tpo/1 minus direct/1: [1, 0, 0, -1], mean 0, sd 0.816497, se 0.408248, half 1.299046;
    - tpo/1 minus tpo/0: [1, 1, 0, -1], mean 0.25, sd 0.957427, se 0.478714, half 1.523267;
    - tpo/1 against the seed (direct/0): wins h1, h2, tie h3, loss h4 -> [1, 1, 0.5, 0],
      mean 0.625, sd 0.478714, se 0.239357, half 0.761633."""
    rows = {(r["arm"], r["iteration"]): r for r in results(run)}
    tpo = rows[("tpo", 1)]
    assert tpo["mean_score"] == 0.5
    near = {"abs": 2e-6}
    assert (tpo["mean_score_lo"], tpo["mean_score_hi"]) == pytest.approx(
        (-0.418565, 1.418565), **near
    )
    assert tpo["diff_vs_direct"] == 0.0
    assert (tpo["diff_vs_direct_lo"], tpo["diff_vs_direct_hi"]) == pytest.approx(
        (-1.299046, 1.299046), **near
    )
    assert tpo["diff_vs_iter0"] == 0.25
    assert tpo["diff_vs_iter0_hi"] == pytest.approx(0.25 + 1.523267, **near)
    assert tpo["win_rate"] == 0.625
    assert tpo["win_rate_lo"] == pytest.approx(0.625 - 0.761633, **near)
    seed, direct1 = rows[("direct", 0)], rows[("direct", 1)]
    assert seed["win_rate_lo"] is None and seed["diff_vs_iter0"] is None  # the seed itself
    assert direct1["diff_vs_direct"] is None and direct1["diff_vs_iter0"] == 0.25
    curve = curve_table(list(rows.values())).splitlines()
    assert curve[0].split()[:4] == ["score", "±95%", "iter", "0"]
    assert curve[2].startswith("tpo") and curve[2].split()[2] == "0.500±0.919"
    assert curve[3].split()[:3] == ["vs", "direct", "+0.000±0.000"]  # iteration 0: the same
    assert curve[3].split()[3] == "+0.000±1.299"
