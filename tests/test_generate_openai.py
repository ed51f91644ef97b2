"""The openai generation backend over real HTTP on 127.0.0.1.

- Against `servers.FakeServer` (a threaded server that answers /v1/completions and can be
  told to fail: 500, 429, hanging past the timeout, a body that is not JSON, a refused key):
  the request each prompt makes, how finish_reason and usage map, seeds that do not depend on
  concurrency, n per request, the retry and failure rules, and a generate stage cut off by a
  dying endpoint that resumes without duplicates.
- Against real `tpo serve` processes started by `generation.openai.serve_command` on the tiny
  model: the lifecycle (started, waited for, used with budget forcing, stopped as a group), a
  command that dies or never answers, and (slow) the tiny preset end to end, both arms, killed
  with SIGKILL mid-generation and resumed, compared in shape and count with an hf run.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from procs import default_sigint
from servers import FakeServer
from tpo import cli
from tpo.config import ConfigError, EndpointConfig, PromptConfig, config_from_dict, read_preset
from tpo.data.split import prepare_data, train_instructions
from tpo.endpoint import Client
from tpo.generate import Completion, GenerationError, SamplingParams
from tpo.generate.forcing import Budget, generate_forced
from tpo.generate.openai import OpenAIGenerator, to_completion
from tpo.generate.pool import Generators
from tpo.generate.served import ServedModel, port_taken, wait_ready
from tpo.generate.stage import SamplingPlan, sample_outputs
from tpo.models import default_prefix, resolve_model_path
from tpo.seeds import derive_seed
from tpo.store import RunDir
from tpo.thoughts import build_prompt, thought_format

FMT = thought_format("tpo", PromptConfig())
MARK = "Here is my response:"
SERVE = f"{shlex.quote(sys.executable)} -m tpo.cli serve {{model}} --port {{port}}"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    fake = FakeServer()
    yield fake
    fake.stop()


def words(text: str) -> int:
    return len(text.split())


def generator(url: str, *, max_n: int = 1, key: str | None = None, **settings: Any):
    defaults = {"concurrency": 4, "max_retries": 3, "timeout_s": 5.0, "retry_backoff_s": 0.01}
    endpoint = EndpointConfig(**{**defaults, **settings})
    client = Client(endpoint, base_url=url, api_key=key, role="generation")
    return OpenAIGenerator(client, "test-model", count_tokens=words, max_n=max_n)


def test_each_prompt_is_one_request_with_the_settings_and_its_own_seed(server: FakeServer):
    out = generator(server.url).generate(["a", "b", "c"], SamplingParams(0.7, 0.9, 12), seed=5)
    bodies = sorted(server.bodies, key=lambda b: b["prompt"])
    assert [b["prompt"] for b in bodies] == ["a", "b", "c"]
    assert [b["seed"] for b in bodies] == [derive_seed(5, i) for i in range(3)]
    assert all(
        (b["model"], b["max_tokens"], b["temperature"], b["top_p"]) == ("test-model", 12, 0.7, 0.9)
        and "n" not in b
        for b in bodies
    )
    # FakeServer names the seed it got; "stop" is finished; usage (3 tokens) is taken as given
    assert out == [Completion(f" seed={derive_seed(5, i)} k=0", True, 3) for i in range(3)]
    generator(server.url).generate(["a"], SamplingParams(0.0, 0.9, 12), seed=5)
    assert server.bodies[-1]["temperature"] == 0.0 and server.bodies[-1]["top_p"] == 1.0


def test_outputs_do_not_depend_on_concurrency_or_answer_order(server: FakeServer):
    """Answers come back in shuffled order (later prompts answer first); every output is the
    same at concurrency 1 and 8, in the prompts' order, because each request has its seed."""

    def slow_first(body: dict[str, Any]) -> list[tuple[str, str | None]]:
        time.sleep(0.05 * (8 - int(body["prompt"][1:])) / 8)
        return [(f"{body['prompt']}:{body['seed']}", "stop")]

    server.complete = slow_first
    prompts = [f"p{i}" for i in range(8)]
    params = SamplingParams(1.0, 1.0, 4)
    one = generator(server.url, concurrency=1).generate(prompts, params, seed=9)
    eight = generator(server.url, concurrency=8).generate(prompts, params, seed=9)
    assert one == eight
    assert [c.text for c in one] == [f"p{i}:{derive_seed(9, i)}" for i in range(8)]


@pytest.mark.parametrize(
    "finish, reported, finished, tokens",
    [
        ("stop", 5, True, 5),  # the model ended it; usage as reported
        ("length", 12, False, 12),
        ("length", None, False, 12),  # the limit, so max_tokens tokens
        ("stop", None, True, 3 + 1),  # counted: 3 words plus the end token
        ("eos_token", None, True, 4),  # TGI's name for it
        (None, None, True, 3),  # no reason: finished if under the limit
        (None, 12, False, 12),
    ],
)
def test_finish_reason_and_usage_map_to_finished_and_tokens(finish, reported, finished, tokens):
    c = to_completion("one two three", finish, reported, SamplingParams(1.0, 1.0, 12), words)
    assert (c.finished, c.num_tokens) == (finished, tokens)


def test_identical_prompts_share_a_request_with_n(server: FakeServer):
    out = generator(server.url, max_n=3).generate(
        ["a"] * 5 + ["b"], SamplingParams(1.0, 1.0, 8), seed=1
    )
    sent = sorted((b["prompt"], b.get("n", 1), b["seed"]) for b in server.bodies)
    seeds = [derive_seed(1, i) for i in (3, 0, 5)]
    assert sent == [("a", 2, seeds[0]), ("a", 3, seeds[1]), ("b", 1, seeds[2])]
    # in the prompts' order, choices by their index (the server lists them reversed); with
    # n > 1 the usage is a sum, so each output's tokens are counted: 2 words + the end token
    assert [c.text for c in out[:5]] == [
        f" seed={derive_seed(1, s)} k={k}" for s, n in ((0, 3), (3, 2)) for k in range(n)
    ]
    assert [c.num_tokens for c in out] == [3] * 5 + [3]
    server.complete = lambda body: [("just one", "stop")]  # a server that ignores n
    with pytest.raises(GenerationError, match=r"answered 1 choices for n=3.*max_n to 1") as info:
        generator(server.url, max_n=3).generate(["a"] * 3, SamplingParams(1.0, 1.0, 8), seed=1)
    assert "\n" not in str(info.value)


def test_retries_500_429_and_slow_answers(server: FakeServer):
    server.failures = ["500", "429", "hang", "500"]
    server.hang_s = 1.0
    gen = generator(server.url, timeout_s=0.3, max_retries=4, concurrency=2)
    out = gen.generate(["a", "b", "c"], SamplingParams(1.0, 1.0, 8), seed=0)
    assert [c.text for c in out] == [f" seed={derive_seed(0, i)} k=0" for i in range(3)]
    assert server.requests == 3 + 4


@pytest.mark.parametrize(
    "always, needle, requests",
    [
        ("500", r"HTTP 500: .*internal error.* \(after 2 attempts\)", 2),
        ("malformed", r"malformed answer: <html>not json</html>", 1),  # not retried
        ("hang", r"timed out after 0.2 s \(after 2 attempts\)", 2),
    ],
)
def test_a_call_that_keeps_failing_stops_the_batch_with_one_line(
    server: FakeServer, always: str, needle: str, requests: int
):
    """The first call fails for good; the calls not sent yet are not sent (concurrency 1)."""
    server.always, server.hang_s = always, 0.5
    gen = generator(server.url, concurrency=1, max_retries=1, timeout_s=0.2)
    with pytest.raises(GenerationError, match=needle) as info:
        gen.generate(["a", "b", "c", "d"], SamplingParams(1.0, 1.0, 8), seed=0)
    assert "\n" not in str(info.value) and "rerun to resume" in str(info.value)
    assert server.requests == requests


def test_refused_key_unknown_model_and_dead_endpoint_are_one_line(server: FakeServer):
    server.api_key = "right"
    params = SamplingParams(1.0, 1.0, 8)
    with pytest.raises(GenerationError, match=r"HTTP 401 .*API key was refused") as info:
        wrong = generator(server.url, key="wrong", api_key_env="GEN_KEY", concurrency=1)
        wrong.generate(["a"] * 4, params, 0)
    assert "(key from $GEN_KEY)" in str(info.value) and server.requests == 1  # 3 never sent
    server.api_key = None
    with pytest.raises(GenerationError, match=r"HTTP 404 .*check the base_url and the model"):
        generator(server.url.removesuffix("/v1") + "/nope").generate(["a"], params, 0)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(GenerationError, match=r"cannot reach .*after 3 attempts") as info:
        generator(dead, max_retries=2).generate(["a", "b"], params, 0)
    assert "\n" not in str(info.value)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_bos_the_server_adds_is_not_sent_twice(tiny):
    """A Llama-style tokenizer adds BOS to any text; the chat template wrote one already, so the
    prompt goes without it and the server's tokens are the ones the hf backend feeds."""
    from tokenizers.processors import TemplateProcessing

    _, tokenizer = tiny
    assert default_prefix(tokenizer) == ""  # SmolLM2's tokenizer adds nothing
    bos = tokenizer.convert_tokens_to_ids("<|im_start|>")
    llama_like = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    llama_like.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|im_start|> $A", special_tokens=[("<|im_start|>", bos)]
    )
    prefix = default_prefix(llama_like)
    assert prefix == "<|im_start|>"
    gen = OpenAIGenerator(
        Client(EndpointConfig(), base_url="http://x", api_key=None, role="g"),
        "m",
        count_tokens=words,
        prefix=prefix,
    )
    prompt = build_prompt(tokenizer, FMT, "Hi")  # starts with <|im_start|>system...
    body = gen.body(prompt, SamplingParams(1.0, 1.0, 4), seed=0, n=1)
    assert prefix + body["prompt"] == prompt and not body["prompt"].startswith(prefix)
    assert (
        llama_like(body["prompt"])["input_ids"]
        == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    )


def stage_run(tmp_path: Path, url: str) -> RunDir:
    data = read_preset("tiny")
    data["generation"] |= {
        "backend": "openai",
        "batch_size": 4,
        "openai": {"endpoint": {"base_url": url, "max_retries": 0}},
    }
    run = RunDir.open(tmp_path / "run", config_from_dict(data))
    prepare_data(run)
    return run


def test_a_dying_endpoint_keeps_whole_batches_and_the_rerun_completes_them(
    server: FakeServer, tmp_path: Path
):
    """After 10 answers the endpoint fails: the stage stops with one line, the samples file
    holds whole batches only, and a rerun writes the rest: the same file as a clean run."""
    server.model_ids = [resolve_model_path("tiny-random")]  # what GET /v1/models must list
    server.complete = lambda body: [(f"{body['seed']} Here is my response:\nHi.", "stop")]
    run = stage_run(tmp_path, server.url)
    plan = SamplingPlan.training(run.config, "tpo", 1)
    path = run.iter_dir("tpo", 1) / "samples.jsonl"
    models = Generators.for_run(run.config)

    def sample() -> None:
        generator, tokenizer = models.generator("tiny-random", plan.batch_size)
        instructions = train_instructions(run, 1)
        sample_outputs(path, instructions, plan, generator=generator, tokenizer=tokenizer)

    server.failures, server.always = ["ok"] * 10, "500"
    with pytest.raises(GenerationError, match=r"HTTP 500.*rerun to resume"):
        sample()
    lines = path.read_text().splitlines()
    # batches of 4 requests (the answers write the marker and stop: no phase 2): 2 whole
    # batches, the third lost with its failed calls
    assert len(lines) == 8
    server.always = None
    sample()
    keys = [(r["instruction_id"], r["index"]) for r in map(json.loads, path.open())]
    assert len(keys) == len(set(keys)) == 32
    first = path.read_bytes()
    path.unlink()
    sample()
    assert path.read_bytes() == first


def test_generate_stage_with_a_dead_endpoint_is_one_error_line(tmp_path: Path, capsys):
    run = stage_run(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    assert cli.main(["generate", str(run.root), "--arm", "tpo", "--iteration", "1"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("tpo: error:")]
    assert len(errors) == 1 and "cannot reach http://127.0.0.1:" in errors[0], err[-2000:]
    assert not run.is_done("generate", "tpo", 1)


def test_an_endpoint_serving_another_model_is_refused(server: FakeServer, tmp_path: Path, tiny):
    """Without a serve_command the endpoint must list the model (a trained M_t, here) in GET
    /v1/models: a server that ignores the model name would answer with the wrong one."""
    run = stage_run(tmp_path, server.url)
    server.model_ids = ["/models/the-seed"]
    with pytest.raises(GenerationError, match=r"serves \['/models/the-seed'\], not '/runs/x/"):
        ServedModel(run.config.generation.openai, "/runs/x/tpo/iter_1/model", tiny[1], log=tmp_path)
    assert server.requests == 0  # refused before any completion was asked for


def test_wait_ready_wants_the_model_listed(server: FakeServer, tmp_path: Path):
    server.model_ids = ["something-else"]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        client = Client(EndpointConfig(), base_url=server.url, api_key=None, role="generation")
        with pytest.raises(GenerationError, match=r"serves \['something-else'\], not 'mine'"):
            wait_ready(sleeper, client, "mine", timeout_s=5, log=tmp_path / "serve.log")
        server.model_ids = ["mine"]
        wait_ready(sleeper, client, "mine", timeout_s=5, log=tmp_path / "serve.log")
    finally:
        sleeper.kill()
        sleeper.wait()


def served_config(command: str, **fields: Any):
    data = read_preset("tiny")
    data["generation"] |= {"backend": "openai", "openai": {"serve_command": command, **fields}}
    return config_from_dict(data)


def pid_gone(pid: int, within_s: float = 10.0, command: str = "") -> bool:
    """Whether process `pid` (running `command`, so a pid reused since does not count) has
    ended, waiting up to `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            zombie = "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return True
        if zombie or command not in cmdline:  # dead (not yet reaped), or another process now
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def test_a_command_that_dies_or_never_answers_is_one_line_and_left_stopped(tmp_path: Path, tiny):
    _, tokenizer = tiny
    log = tmp_path / "serve.log"
    python = shlex.quote(sys.executable)
    dies = f"{python} -c \"print('no GPU found'); raise SystemExit(3)\" {{model}} {{port}}"
    cfg = served_config(dies).generation.openai
    with pytest.raises(GenerationError, match=r"status 3 .*: no GPU found \(log") as info:
        ServedModel(cfg, "tiny-random", tokenizer, log=log)
    assert "\n" not in str(info.value) and str(log) in str(info.value)
    silent = f'{python} -c "import time; time.sleep(60)" {{model}} {{port}}'
    cfg = served_config(silent, start_timeout_s=1).generation.openai
    with pytest.raises(GenerationError, match=r"did not answer GET .* within 1 s"):
        ServedModel(cfg, "tiny-random", tokenizer, log=log)
    pids = [int(p) for p in re.findall(r"== tpo: pid (\d+)", log.read_text())]
    assert len(pids) == 2 and pid_gone(pids[1], command="time.sleep(60)")  # stopped at timeout
    cfg = served_config("no-such-command-tpo {model} {port}").generation.openai
    with pytest.raises(GenerationError, match=r"cannot run 'no-such-command-tpo'"):
        ServedModel(cfg, "tiny-random", tokenizer, log=log)


@pytest.mark.slow
def test_serve_command_lifecycle_with_tpo_serve(tmp_path: Path):
    """`tpo serve` started per model by the command template: ready when /v1/models lists the
    model, generates with budget forcing (two phases over raw completions), kept while the same
    model is asked for, stopped (the whole process group) on release."""
    config = served_config(SERVE, max_n=4)
    models = Generators.for_run(config, log_dir=tmp_path)
    gen, tok = models.generator("tiny-random", 8)
    assert models.generator("tiny-random", 8)[1] is tok  # the same server, not a second one
    prompts = [build_prompt(tok, FMT, "Say hi.")] * 4 + [build_prompt(tok, FMT, "Count.")] * 2
    params = SamplingParams(1.0, 1.0, 16)
    out = generate_forced(gen, prompts, params=params, fmt=FMT, budget=Budget(6, 10), seed=3)
    assert len(out) == 6 and all(o.forced and f"\n{MARK}\n" in o.output for o in out)
    assert all(0 < o.num_tokens <= 16 for o in out)
    again = generate_forced(gen, prompts, params=params, fmt=FMT, budget=Budget(6, 10), seed=3)
    assert [o.output for o in again] == [o.output for o in out]  # seeded per request
    held = models.backend.served  # the openai backend's server of the loaded model
    assert isinstance(held, ServedModel) and held.process is not None and held.client
    pid, port = held.process.pid, int(held.client.base_url.split(":")[-1].split("/")[0])
    models.release()
    assert pid_gone(pid, command="tpo.cli serve") and models.loaded is None
    assert not port_taken(port)
    assert len(re.findall(r"== tpo: pid ", (tmp_path / "serve.log").read_text())) == 1


# --- the tiny preset end to end, against tpo serve ------------------------------------------


def shape(run: Path) -> dict[str, Any]:
    """What two runs of one config share whatever the model writes: the files, each record
    file's keys (no duplicates) and fields, the manifest's stages and what each records, the
    results rows. Pairs depend on the scores, so only their fields are compared."""
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    out: dict[str, Any] = {"files": [f for f in files if f != "serve.log"]}
    for path in sorted(run.rglob("*.jsonl")):
        if path.name == "train_log.jsonl":  # the trainer's log (timings), not records
            continue
        records = [json.loads(line) for line in path.open()]
        keys = [(r.get("instruction_id", r.get("id")), r.get("index")) for r in records]
        assert len(keys) == len(set(keys)), f"duplicates in {path}"
        fields = sorted({tuple(sorted(r)) for r in records})
        name = str(path.relative_to(run))
        out[name] = fields if path.name == "pairs.jsonl" else (sorted(keys, key=str), fields)
    manifest = json.loads((run / "manifest.json").read_text())["done"]
    # `dtype` is the local engine's (hf's float32); a server picks its own, so none is recorded
    out["manifest"] = {key: sorted(set(value) - {"dtype"}) for key, value in manifest.items()}
    rows = json.loads((run / "results.json").read_text())
    out["results"] = [(r["arm"], r["iteration"], sorted(r)) for r in rows]
    return out


def wait_until(proc: subprocess.Popen, ready: Any, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be stopped"


@pytest.mark.slow
def test_tiny_preset_through_tpo_serve_interrupted_killed_and_resumed(
    tmp_path: Path, tiny_run: Path
):
    """Ctrl-C while the first server runs: exit 130, the server stopped. SIGKILL in the middle
    of the tpo arm's generation: the server goes too (it gets SIGTERM when tpo dies). The
    resumed run completes: equal in shape and count to the hf run, no duplicates."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "tpo.cli", "run", "--preset", "tiny", "--out", str(out)]
    args += ["--set", "generation.backend=openai", f"generation.openai.serve_command={SERVE}"]
    args += ["generation.batch_size=4", "generation.openai.max_n=4"]
    log, samples = out / "serve.log", out / "tpo" / "iter_1" / "samples.jsonl"

    def server_pids() -> list[int]:
        return [int(p) for p in re.findall(r"== tpo: pid (\d+)", log.read_text())]

    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=default_sigint
        )
        wait_until(proc, lambda: log.exists() and "listening on" in log.read_text())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
        assert "interrupted; run the same command again" in (tmp_path / "stderr").read_text()
        assert pid_gone(server_pids()[-1], command="tpo.cli serve")

        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        wait_until(proc, lambda: samples.exists() and samples.read_bytes().count(b"\n") >= 4)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    written = samples.read_bytes().count(b"\n")
    assert 4 <= written < 32, written
    assert pid_gone(server_pids()[-1], command="tpo.cli serve"), "the server outlived its run"

    resumed = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert shape(out) == shape(tiny_run)
    tpo_samples = [json.loads(line) for line in samples.open()]
    assert all(s["forced"] and f"\n{MARK}\n" in s["output"] for s in tpo_samples)  # forcing on
    assert all(s["output_tokens"] <= 16 for s in tpo_samples)  # thought 8 + response 8
    # one server per model and stretch of use: the seed until Ctrl-C; the seed (direct and tpo
    # iter 0 eval, tpo generate) until the kill; then the seed again, tpo M_1 (eval), the seed
    # (direct generate), direct M_1 (eval); none left running
    assert len(server_pids()) == 6, server_pids()
    assert all(pid_gone(pid, 0.0, command="tpo.cli serve") for pid in server_pids())


@pytest.mark.parametrize(
    "openai, needle",
    [
        ({"serve_command": "vllm serve {mdl} --port {port}"}, "unknown placeholder {mdl}"),
        ({"serve_command": "vllm serve x --port {port}"}, "serve_command: must contain {model}"),
        ({"serve_command": "vllm serve {model}"}, "must contain {port}, or set port"),
        ({"serve_command": "vllm serve '{model}"}, "serve_command: no closing quotation"),
        (
            {
                "serve_command": "vllm serve {model} --port {port}",
                "endpoint": {"base_url": "http://h/v1"},
            },
            "generation.openai.endpoint.base_url: leave it null with a serve_command",
        ),
        ({"model": "policy"}, "generation.openai.model: without a serve_command it must contain"),
        ({"max_n": 0}, "generation.openai.max_n: must be >= 1"),
    ],
)
def test_the_openai_section_is_checked_where_it_is_written(openai, needle):
    data = read_preset("tiny")
    data["generation"] |= {"backend": "openai", "openai": openai}
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert needle in str(info.value)
    data["generation"] |= {"backend": "vllm-nope", "openai": {}}
    with pytest.raises(ConfigError, match=r"generation\.backend: hf \| vllm \| openai"):
        config_from_dict(data)
