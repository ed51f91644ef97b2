"""LLM judges over real HTTP: an OpenAI-compatible test server on 127.0.0.1, started here.

The server (`servers.FakeServer`, shared with the generation backend's tests) answers
/v1/chat/completions like vLLM or OpenAI would, and can be told to fail: HTTP 500 or 429, hang
past the client's timeout, answer malformed JSON, answer garbage verdicts, or require an API
key. Everything runs on the loopback interface.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers import FakeServer
from tpo.config import EndpointConfig, LLMJudgeConfig, config_from_dict, read_preset
from tpo.data.split import prepare_data, train_instructions
from tpo.generate.forcing import Generated
from tpo.generate.stage import make_sample
from tpo.judge import JudgeError, JudgeItem
from tpo.judge.backends import OpenAICompatible, openai_backend
from tpo.judge.build import make_judge
from tpo.judge.cache import JudgeCache
from tpo.judge.llm import PairwiseJudge, PointwiseJudge
from tpo.judge.stage import judge_samples, score_samples
from tpo.pairs import make_pairs
from tpo.records import Instruction, Response, Sample, Score
from tpo.store import RunDir, read_json, read_jsonl, write_jsonl
from tpo.thoughts import thought_format

SHOWN = re.compile(r"\[Response A\]\n(.*?)\n\n\[Response B\]\n(.*?)\n\nFirst explain", re.DOTALL)
SINGLE = re.compile(r"\[Response\]\n(.*?)\n\nFirst explain", re.DOTALL)


def number(text: str) -> int:
    return int(re.findall(r"\d+", text)[-1])


def fair_judge(prompt: str) -> str:
    """Prefers the response holding the larger number (its last number), in either position;
    scores a single response by its number."""
    pair = SHOWN.search(prompt)
    if pair:
        a, b = number(pair.group(1)), number(pair.group(2))
        verdict = "A" if a > b else "B" if b > a else "tie"
        return f"Both try. One has a bigger number.\nVerdict: {verdict}"
    single = SINGLE.search(prompt)
    assert single is not None, prompt
    return f"Fine.\nScore: {min(10, max(1, number(single.group(1))))}"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    fake = FakeServer(fair_judge)
    yield fake
    fake.stop()


def backend(url: str, model: str = "judge-model", **settings: Any) -> OpenAICompatible:
    defaults: dict[str, Any] = {
        "concurrency": 4,
        "max_retries": 3,
        "timeout_s": 5.0,
        "retry_backoff_s": 0.01,
    }
    endpoint = EndpointConfig(**{**defaults, **settings})
    return OpenAICompatible(endpoint, model, 64, base_url=url, api_key=None)


def llm(url: str | None, model: str, key_env: str) -> LLMJudgeConfig:
    endpoint = EndpointConfig(base_url=url, api_key_env=key_env)
    return LLMJudgeConfig(model=model, backend="openai", openai=endpoint)


def pairwise(backend: Any, cache: JudgeCache | None = None) -> PairwiseJudge:
    """A pairwise judge comparing all pairs (the config's default), seed 0."""
    return PairwiseJudge(backend, cache, pairs_per_sample=None, seed=0)


def group(values: list[int], iid: str = "q1") -> list[JudgeItem]:
    instruction = Instruction(iid, f"Write a big number ({iid}).")
    return [JudgeItem(instruction, Response(f"My number is {v}")) for v in values]


def ranks(scores: list[float | None]) -> list[int]:
    return sorted(range(len(scores)), key=lambda k: scores[k] or 0.0)


def test_pairwise_over_http_ranks_responses(server: FakeServer) -> None:
    judge = pairwise(backend(server.url))
    scores = judge.score(group([3, 8, 1, 5]))
    assert ranks(scores) == [2, 0, 3, 1]
    assert server.requests == judge.stats.calls == 12  # K(K-1), both positions
    assert server.bodies[0]["temperature"] == 0.0 and server.bodies[0]["model"] == "judge-model"
    assert judge.stats.failed == judge.stats.retries == judge.stats.unparsed == 0


def test_pointwise_over_http(server: FakeServer) -> None:
    judge = PointwiseJudge(backend(server.url))
    assert judge.score(group([3, 8, 0, 12])) == [3.0, 8.0, 1.0, 10.0]
    assert judge.stats.calls == 4


def test_retries_after_500_429_and_timeouts(server: FakeServer) -> None:
    server.failures = ["500", "429", "hang", "500"]
    server.hang_s = 1.0
    judge = pairwise(backend(server.url, timeout_s=0.3, max_retries=4, concurrency=2))
    scores = judge.score(group([3, 8, 1]))
    assert ranks(scores) == [2, 0, 1]
    assert judge.stats.calls == 6 and judge.stats.failed == 0
    assert judge.stats.retries == 4 and server.requests == 6 + 4


def test_calls_that_keep_failing_count_as_ties_and_are_reported(server: FakeServer) -> None:
    """One comparison fails for good (2 attempts, both 500); it counts as a tie."""
    server.failures = ["500", "500"]
    judge = pairwise(backend(server.url, max_retries=1, concurrency=1))
    scores = judge.score(group([3, 8]))
    assert judge.stats.calls == 2 and judge.stats.failed == 1 and judge.stats.retries == 1
    assert "HTTP 500" in (judge.stats.last_error or "") and "2 attempts" in judge.stats.last_error
    # one win for 8, one tie: W = [[0.5+0.5, ...]]: 8 still ahead, by less than ln 5
    assert scores[1] > scores[0]  # type: ignore[operator]


def test_a_group_whose_every_call_failed_gets_null_scores(server: FakeServer) -> None:
    judge = pairwise(backend(server.url, max_retries=1))
    assert None not in judge.score(group([3, 8]))
    server.always = "500"
    assert judge.score(group([3, 8, 1], "q2")) == [None, None, None]
    assert judge.stats.failed == 6 and judge.stats.calls == 8


def test_a_judge_whose_every_call_fails_stops(server: FakeServer) -> None:
    server.always = "500"
    judge = pairwise(backend(server.url, max_retries=1, concurrency=2))
    with pytest.raises(JudgeError, match=r"all 8 calls of the judge openai:.*HTTP 500"):
        judge.score(group(list(range(8))))
    assert server.requests == 16  # one chunk (4 x concurrency), 2 attempts each; 56 not sent


def test_malformed_answers_and_garbage_verdicts(server: FakeServer) -> None:
    server.failures = ["malformed"]
    server.answer = lambda prompt: "I like turtles."
    judge = pairwise(backend(server.url, concurrency=1))
    scores = judge.score(group([3, 8]))
    assert scores == [1000.0, 1000.0]  # no verdicts: all ties
    assert judge.stats.failed == 1 and "malformed" in (judge.stats.last_error or "")
    assert judge.stats.unparsed == 1 and judge.stats.ties == 0
    pointwise = PointwiseJudge(backend(server.url))
    assert pointwise.score(group([3, 8])) == [None, None]
    assert pointwise.stats.unparsed == 2 and pointwise.stats.failed == 0


def test_wrong_key_is_one_clear_error(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.api_key = "right-key"
    monkeypatch.setenv("MY_JUDGE_KEY", "wrong-key")
    judge = PointwiseJudge(openai_backend(llm(server.url, "judge-model", "MY_JUDGE_KEY")))
    with pytest.raises(
        JudgeError, match=r"HTTP 401.*API key was refused \(key from \$MY_JUDGE_KEY\)"
    ) as info:
        judge.score(group([3]))
    assert "\n" not in str(info.value)
    monkeypatch.setenv("MY_JUDGE_KEY", "right-key")
    judge = PointwiseJudge(openai_backend(llm(server.url, "judge-model", "MY_JUDGE_KEY")))
    assert judge.score(group([3])) == [3.0]


def test_wrong_path_is_one_clear_error(server: FakeServer) -> None:
    judge = PointwiseJudge(backend(server.url.removesuffix("/v1") + "/nope"))
    with pytest.raises(JudgeError, match="HTTP 404"):
        judge.score(group([3]))


@pytest.mark.parametrize("concurrency", [1, 4])
def test_answers_before_a_refused_key_are_cached(
    server: FakeServer, tmp_path: Path, concurrency: int
) -> None:
    """A 401 stops the judge mid-chunk, but the answers the other calls of that chunk got
    are cached, so a rerun does not pay for them again."""
    server.failures = ["ok"] * 3
    server.always = "401"
    cache_file = tmp_path / "cache.sqlite"
    judge = PointwiseJudge(backend(server.url, concurrency=concurrency), JudgeCache(cache_file))
    with pytest.raises(JudgeError, match="HTTP 401") as info:
        judge.score(group(list(range(1, 9))))
    assert "\n" not in str(info.value)
    assert len(JudgeCache(cache_file)) == 3 and judge.stats.calls - judge.stats.failed == 3
    server.always = None
    sent = server.requests
    again = PointwiseJudge(backend(server.url, concurrency=concurrency), JudgeCache(cache_file))
    assert again.score(group(list(range(1, 9)))) == [float(v) for v in range(1, 9)]
    assert again.stats.cached == 3 and again.stats.calls == server.requests - sent == 5


def test_openai_without_a_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(JudgeError, match="NO_SUCH_KEY_VAR"):
        openai_backend(llm(None, "gpt-4o", "NO_SUCH_KEY_VAR"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_endpoint_that_does_not_answer() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    judge = PointwiseJudge(backend(url, max_retries=2))
    with pytest.raises(JudgeError, match=r"all 2 calls.*cannot reach") as info:
        judge.score(group([3, 4]))
    assert "\n" not in str(info.value)
    assert judge.stats.failed == 2 and judge.stats.retries == 4


def test_cache_second_run_makes_no_call(server: FakeServer, tmp_path: Path) -> None:
    cache_file = tmp_path / "judge_cache.sqlite"
    first = pairwise(backend(server.url), JudgeCache(cache_file))
    scores = first.score(group([3, 8, 1]) + group([2, 9], "q2"))
    assert first.stats.calls == 8 and server.requests == 8
    second = pairwise(backend(server.url), JudgeCache(cache_file))
    assert second.score(group([3, 8, 1]) + group([2, 9], "q2")) == scores
    assert second.stats.calls == 0 and second.stats.cached == 8 and server.requests == 8
    # a failed call is not cached: it is asked again next time
    server.always = "500"
    third = PointwiseJudge(backend(server.url, max_retries=0), JudgeCache(cache_file))
    with pytest.raises(JudgeError):
        third.score(group([3]))
    server.always = None
    fourth = PointwiseJudge(backend(server.url), JudgeCache(cache_file))
    assert fourth.score(group([3])) == [3.0] and fourth.stats.calls == 1
    # another model at the same endpoint has its own answers
    other = pairwise(backend(server.url, model="other-judge"), JudgeCache(cache_file))
    other.score(group([3, 8, 1]))
    assert other.stats.calls == 6


# --- the judge stage of a real run directory ------------------------------------------------


def make_run(
    tmp_path: Path,
    url: str,
    type: str = "pairwise",
    cache: bool = True,
    pairs_per_sample: int | None = None,
    **endpoint: Any,
) -> RunDir:
    data = read_preset("tiny")
    data["judge"] = {
        "type": type,
        "cache": cache,
        "llm": {
            "model": "judge-model",
            "backend": "openai",
            "openai": {"base_url": url, "retry_backoff_s": 0.01, "max_retries": 1, **endpoint},
        },
        "pairwise": {"pairs_per_sample": pairs_per_sample},
    }
    run = RunDir.open(tmp_path / "run", config_from_dict(data))
    prepare_data(run)
    for arm in ("tpo", "direct"):
        fmt = thought_format(arm, run.config.prompt)
        samples = []
        for q, instruction in enumerate(train_instructions(run, 1)):
            for k in range(4):
                response = f"A line with the number {(q * 7 + k * 5) % 11}."
                output = f"Think.\nHere is my response:\n{response}" if fmt.thinking else response
                if (q, k) == (1, 2):
                    output = "Think, but never answer." if fmt.thinking else ""
                made = Generated(output, False, 9)
                samples.append(make_sample(instruction.id, k, "p", made, arm=arm, fmt=fmt))
        write_jsonl(run.iter_dir(arm, 1) / "samples.jsonl", (s.to_dict() for s in samples))
        run.mark_done("generate", arm, 1)
    return run


def test_judge_stage_reports_and_the_second_arm_is_cached(
    server: FakeServer, tmp_path: Path
) -> None:
    run = make_run(tmp_path, server.url, pairs_per_sample=2)
    judge_samples(run, arm="tpo", iteration=1)
    summary = run.manifest()["done"]["tpo/iter_1/judge"]
    # 8 prompts; one has 3 parsed samples (3 pairs), the others 4 samples on a 4-cycle with
    # m=2 (4 pairs); both positions
    assert summary["calls"] == server.requests == 2 * (7 * 4 + 3)
    assert summary["cached"] == summary["ties"] == summary["call_failures"] == 0
    assert summary["failed"] == 1  # the parse failure
    assert {"cached", "ties", "judge_seconds"} <= set(summary)
    scores = read_jsonl(run.iter_dir("tpo", 1) / "scores.jsonl", Score.from_dict)
    assert len(scores) == 32 and all(s.judge.startswith("pairwise:openai:") for s in scores)
    before = server.requests
    judge_samples(run, arm="direct", iteration=1)  # the same responses under the other arm
    direct = run.manifest()["done"]["direct/iter_1/judge"]
    assert server.requests == before and direct["calls"] == 0 and direct["cached"] > 0
    make_pairs(run, arm="tpo", iteration=1)
    assert run.manifest()["done"]["tpo/iter_1/pairs"]["pairs"] == 8


def test_resume_rejudges_incomplete_groups_and_failures(server: FakeServer, tmp_path: Path) -> None:
    run = make_run(tmp_path, server.url)
    path = run.iter_dir("tpo", 1) / "scores.jsonl"
    samples = read_jsonl(run.iter_dir("tpo", 1) / "samples.jsonl", Sample.from_dict)
    instructions = {i.id: i for i in train_instructions(run, 1)}
    judge_samples(run, arm="tpo", iteration=1)
    complete = read_jsonl(path, Score.from_dict)
    ids = list(dict.fromkeys(s.instruction_id for s in samples))
    # a crash cut the file inside the third prompt's chunk; the first prompt's judge failed
    kept = [s for s in complete if s.instruction_id in ids[1:2]]
    kept += [s for s in complete if s.instruction_id == ids[2]][:2]
    kept += [Score(ids[0], k, "x", None, "judge_failed") for k in range(4)]
    text = "".join(json.dumps(s.to_dict()) + "\n" for s in kept)
    path.write_text(text + '{"instruction_id": "cut')
    requests = server.requests
    judge = pairwise(backend(server.url))  # no cache: every re-judged group is asked
    scores = score_samples(path, samples, instructions, judge)
    assert len(scores) == 32 and len({(s.instruction_id, s.index) for s in scores}) == 32
    assert sorted((s.instruction_id, s.index, s.value) for s in scores) == sorted(
        (s.instruction_id, s.index, s.value) for s in complete
    )
    # ids[1] stood; ids[0] (failure) and ids[2] (incomplete) and the 5 unwritten were re-judged
    assert judge.stats.calls == server.requests - requests == 7 * 12


def test_all_calls_failing_stops_the_stage_with_one_line(
    server: FakeServer, tmp_path: Path
) -> None:
    server.always = "500"
    run = make_run(tmp_path, server.url, cache=False)
    with pytest.raises(JudgeError, match=r"all 32 calls of the judge .*HTTP 500"):
        judge_samples(run, arm="tpo", iteration=1)
    assert server.requests == 32 * 2  # one chunk of 4 x concurrency calls, then it stopped
    assert not run.is_done("judge", "tpo", 1)
    server.always = None
    judge_samples(run, arm="tpo", iteration=1)  # the endpoint is back: resume
    summary = read_json(run.manifest_path)["done"]["tpo/iter_1/judge"]
    assert summary["failed"] == 1 and summary["call_failures"] == 0


def test_endpoint_dying_mid_run_stops_and_resumes(server: FakeServer, tmp_path: Path) -> None:
    """After 10 answers every request fails. The stage stops once 8 calls in a row failed
    (not after every remaining call has been retried), keeps the scores it wrote, and a rerun
    judges only what is missing or failed."""
    server.failures = ["ok"] * 10
    server.always = "500"
    run = make_run(tmp_path, server.url, type="pointwise", concurrency=2, max_retries=0)
    path = run.iter_dir("tpo", 1) / "scores.jsonl"
    samples = read_jsonl(run.iter_dir("tpo", 1) / "samples.jsonl", Sample.from_dict)
    instructions = {i.id: i for i in train_instructions(run, 1)}
    judge = make_judge(run.config.judge, run.root)
    # chunks of two prompts: 7 calls (one parse failure), then 3 answers and 5 failures (a
    # streak of at most 5), then 8 failures: stop
    with pytest.raises(JudgeError, match=r"the last \d+ calls of the judge .*HTTP 500") as info:
        score_samples(path, samples, instructions, judge, chunk=8)
    assert "\n" not in str(info.value)
    assert server.requests == 7 + 8 + 8
    written = read_jsonl(path, Score.from_dict)
    assert len(written) == 16
    assert sum(s.error == "judge_failed" for s in written) == 5
    server.always = None
    resumed = make_judge(run.config.judge, run.root)
    scores = score_samples(path, samples, instructions, resumed, chunk=8)
    assert len(scores) == 32 and not any(s.error == "judge_failed" for s in scores)
    assert resumed.stats.calls == 5 + 16 and resumed.stats.cached == 3


def test_a_judge_whose_every_answer_is_unparsed_is_warned_about(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.answer = lambda prompt: "I like turtles."
    run = make_run(tmp_path, server.url, type="pointwise", cache=False)
    judge_samples(run, arm="tpo", iteration=1)  # completes: the scores are written, all null
    scores = read_jsonl(run.iter_dir("tpo", 1) / "scores.jsonl", Score.from_dict)
    assert len(scores) == 32 and all(s.value is None for s in scores)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warnings) == 1, warnings
    assert "none of the 31 answers of judge pointwise:openai:" in warnings[0]
    assert warnings[0].startswith("[tpo] tpo iter 1 judge: warning:")
    server.answer = fair_judge  # a judge that answers in form: no warning
    judge_samples(run, arm="direct", iteration=1)
    assert "warning:" not in capsys.readouterr().err


def test_cli_wrong_key_is_one_error_line(server: FakeServer, tmp_path: Path) -> None:
    server.api_key = "right-key"
    run = make_run(tmp_path, server.url, api_key_env="TPO_TEST_JUDGE_KEY")
    env = {**os.environ, "TPO_TEST_JUDGE_KEY": "wrong-key"}
    proc = subprocess.run(
        [sys.executable, "-m", "tpo.cli", "judge", str(run.root), "--arm", "tpo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tpo: error:")]
    assert len(errors) == 1 and "HTTP 401" in errors[0], proc.stderr[-2000:]


# --- faults for some items only: the run goes on, the failures are recorded -------------------

FAULTY = (1, 3, 5, 7)  # the prompts whose calls fail, each by one of
FAULT_KINDS = ("500", "429", "hang", "malformed")


def test_items_whose_calls_always_fail_are_recorded_and_only_they_are_asked_again(
    server: FakeServer, tmp_path: Path
) -> None:
    """Four prompts' calls always fail, each its own way (HTTP 500, 429, a hang past the
    timeout, a body that is not JSON); the other four answer (one call at a time, so that no
    two failing prompts are asked in a row). The stage finishes, records the 15 failures (one
    of those prompts has a parse failure, never asked) as judge_failed and counts them;
    judging the file again asks only those 15."""
    run = make_run(
        tmp_path, server.url, type="pointwise", concurrency=1, max_retries=1, timeout_s=0.2
    )
    server.hang_s = 0.5
    instructions = train_instructions(run, 1)
    faults = {instructions[q].text: kind for q, kind in zip(FAULTY, FAULT_KINDS, strict=True)}

    def fault_for(body: dict[str, Any]) -> str | None:
        prompt = body["messages"][-1]["content"]
        return next((kind for text, kind in faults.items() if text in prompt), None)

    server.fault_for = fault_for
    judge_samples(run, arm="tpo", iteration=1)
    summary = run.manifest()["done"]["tpo/iter_1/judge"]
    assert summary["failed"] == 1 + 15 and summary["call_failures"] == 15  # + the parse failure
    path = run.iter_dir("tpo", 1) / "scores.jsonl"
    scores = read_jsonl(path, Score.from_dict)
    failed = {s.instruction_id for s in scores if s.error == "judge_failed"}
    assert failed == {instructions[q].id for q in FAULTY}
    assert all(s.value is not None for s in scores if s.error is None)
    server.fault_for = None  # the endpoint recovered
    before = server.requests
    samples = read_jsonl(run.iter_dir("tpo", 1) / "samples.jsonl", Sample.from_dict)
    judge = make_judge(run.config.judge, run.root)
    again = score_samples(path, samples, {i.id: i for i in instructions}, judge)
    assert server.requests - before == 15
    assert not any(s.error == "judge_failed" for s in again) and len(again) == 32


def scoring(run: RunDir) -> tuple[Path, list[Sample], dict[str, Instruction]]:
    """What `score_samples` takes for tpo iteration 1 of `run`."""
    samples = read_jsonl(run.iter_dir("tpo", 1) / "samples.jsonl", Sample.from_dict)
    by_id = {i.id: i for i in train_instructions(run, 1)}
    return run.iter_dir("tpo", 1) / "scores.jsonl", samples, by_id


class RaisingJudge:
    """A judge (not over HTTP) that raises for the instructions in `bad`, as a judge with a
    bug or an input it cannot take would; scores the rest by the number in the response."""

    name = "raising"

    def __init__(self, bad: set[str]):
        from tpo.judge import JudgeStats

        self.bad = bad
        self.stats = JudgeStats()

    def score(self, items: Any) -> list[float | None]:
        if any(item.instruction.id in self.bad for item in items):
            raise RuntimeError("CUDA error: device-side assert triggered\nmore lines")
        self.stats.calls += len(items)
        return [float(number(item.response)) for item in items]


def test_a_judge_that_raises_for_some_items_fails_only_those(
    server: FakeServer, tmp_path: Path
) -> None:
    path, samples, by_id = scoring(make_run(tmp_path, server.url))
    ids = list(by_id)
    judge = RaisingJudge({ids[3], ids[5]})
    scores = score_samples(path, samples, by_id, judge, chunk=16)
    assert judge.stats.raised == 8
    assert judge.stats.last_error == "RuntimeError: CUDA error: device-side assert triggered"
    assert {s.instruction_id for s in scores if s.error == "judge_failed"} == {ids[3], ids[5]}
    assert sum(s.value is not None for s in scores) == 32 - 8 - 1  # and the parse failure
    fixed = RaisingJudge(set())
    assert len(score_samples(path, samples, by_id, fixed)) == 32
    assert fixed.stats.calls == 8  # resume asked again only what raised


def test_a_judge_that_raises_for_every_item_stops_with_one_line(
    server: FakeServer, tmp_path: Path
) -> None:
    path, samples, by_id = scoring(make_run(tmp_path, server.url))
    with pytest.raises(JudgeError, match="raised for all 15 responses asked so far") as info:
        score_samples(path, samples, by_id, RaisingJudge(set(by_id)), chunk=16)
    assert "\n" not in str(info.value)
    assert len(read_jsonl(path, Score.from_dict)) == 16  # the first chunk's failures, kept


@pytest.mark.slow
def test_a_finished_run_asks_again_what_the_judge_failed_and_redoes_what_follows(
    server: FakeServer, tmp_path: Path
) -> None:
    """`tpo run` (tiny, one iteration, a pointwise judge over HTTP) while every call about one
    training prompt fails with HTTP 500: the run finishes with those items recorded as
    failed. The same run again, the endpoint well: the judge is asked for those items only,
    and pairs, training and evaluation are redone from the new scores, so the run ends as
    one whose judge never failed. A third run asks nothing and redoes nothing."""
    from tpo.config import load_config
    from tpo.pipeline import run as tpo_run

    config = load_config(
        preset="tiny",
        overrides=[
            "iterations=1",
            "judge.type=pointwise",
            "judge.llm.model=judge-model",
            "judge.llm.backend=openai",
            f"judge.llm.openai.base_url={server.url}",
            "judge.llm.openai.max_retries=0",
        ],
    )

    def by_length(prompt: str) -> str:  # the tiny model's responses hold no numbers
        single = SINGLE.search(prompt)
        assert single is not None, prompt
        return f"Fine.\nScore: {len(single.group(1)) % 10 + 1}"

    server.answer = by_length
    tpo_run(config, tmp_path / "clean")
    probe = RunDir.open(tmp_path / "probe", config)
    prepare_data(probe)
    faulty = train_instructions(probe, 1)[1].text
    server.fault_for = lambda body: "500" if faulty in body["messages"][-1]["content"] else None
    out = tmp_path / "run"
    tpo_run(config, out)
    failed = {}
    for arm in ("tpo", "direct"):
        scores = read_jsonl(out / arm / "iter_1" / "scores.jsonl", Score.from_dict)
        failed[arm] = sum(s.error == "judge_failed" for s in scores)
        assert failed[arm] >= 3, arm  # the prompt's samples (one may not parse)
    server.fault_for = None
    tpo_run(config, out)
    done = read_json(out / "manifest.json")["done"]
    for arm in ("tpo", "direct"):
        assert done[f"{arm}/iter_1/judge"]["calls"] == failed[arm]  # only those were asked
        got, want = out / arm / "iter_1", tmp_path / "clean" / arm / "iter_1"
        scores = [
            sorted(read_jsonl(d / "scores.jsonl", Score.from_dict), key=str) for d in (got, want)
        ]
        assert scores[0] == scores[1]
        for name in ("pairs.jsonl", "model/model.safetensors", "eval.json", "eval_scores.jsonl"):
            assert (got / name).read_bytes() == (want / name).read_bytes(), (arm, name)
    assert read_json(out / "tpo/iter_1/h2h_vs_direct.json") == read_json(
        tmp_path / "clean/tpo/iter_1/h2h_vs_direct.json"
    )
    requests, manifest = server.requests, (out / "manifest.json").read_bytes()
    tpo_run(config, out)
    assert server.requests == requests and (out / "manifest.json").read_bytes() == manifest


@pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs a tmpfs to fill (root): under a file-size limit, the stand-in elsewhere, "
    "sqlite reports 'disk I/O error', not a full disk",
)
def test_a_full_disk_under_the_judge_cache_is_one_line_and_the_stage_resumes(
    server: FakeServer, tmp_path: Path
) -> None:
    """`tpo judge` on a run directory on a small disk stops itself (SIGSTOP) just before its
    first answers go into the judge cache (sqlite); the disk is filled; it goes on, and the
    cache write fails: one error line, exit 2, the stage not done, the scores file whole.
    With room again the same command finishes, with the scores of a judge that never met a
    full disk. (Without root there is no disk to fill: see the skip.)"""
    from test_faults import Disk, error_lines

    want = make_run(tmp_path / "ref", server.url, type="pointwise")
    judge_samples(want, arm="tpo", iteration=1)
    disk = Disk(tmp_path / "disk")
    try:
        run = make_run(disk.where, server.url, type="pointwise")
        cmd = [sys.executable, "-m", "tpo.cli", "judge", str(run.root), "--arm", "tpo"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TPO_FAULT")}
        fault = {"TPO_FAULT": "stop+cache:judge_cache.sqlite"}
        proc = subprocess.Popen(cmd, env={**env, **fault}, stderr=subprocess.PIPE, text=True)
        while Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] != "T":
            assert proc.poll() is None
            time.sleep(0.01)
        disk.fill_under(proc.pid, run.root / "judge_cache.sqlite-wal")
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=300)
        disk.free()
        assert proc.returncode == 2, err[-3000:]
        (line,) = error_lines(err)
        assert f"judge cache {run.root / 'judge_cache.sqlite'}: " in line, line
        assert "no space left on device" in line or "file too large" in line, line
        assert not run.is_done("judge", "tpo", 1)
        read_jsonl(run.iter_dir("tpo", 1) / "scores.jsonl", Score.from_dict)  # whole
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        scores = [
            sorted(read_jsonl(r.iter_dir("tpo", 1) / "scores.jsonl", Score.from_dict), key=str)
            for r in (run, want)
        ]
        assert scores[0] == scores[1]
    finally:
        disk.close()
