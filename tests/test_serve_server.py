"""`tpo serve` end to end: the real `openai` client against the server on 127.0.0.1.

Two kinds of engine behind the real HTTP server:
- the tiny random model (real generation; budget forcing on, so every output has a thought, a
  forced marker and a response). Its text is random, so the checks are invariants that hold
  for any text (content never holds the marker or the thought; streamed and whole answers of
  a seeded request agree; 50 concurrent answers equal the same requests run one by one);
- `Scripted`, a `Backend` (the engine's protocol) that yields fixed text deltas, to place a
  marker across token boundaries on purpose and check the exact split.
"""

from __future__ import annotations

import hmac
import http.client
import json
import random
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from servers import running
from tpo.config import PromptConfig
from tpo.generate import Delta, SamplingParams
from tpo.generate import hf as hf_module
from tpo.generate.forcing import finished_sentences, trim_thought
from tpo.generate.hf import HFGenerator, HFStreamer
from tpo.serve.engine import Engine
from tpo.serve.server import TpoHTTPServer
from tpo.thoughts import build_prompt, thought_format

GENERIC = thought_format("tpo", PromptConfig())
MARK = "Here is my response:"
SPLIT = ["Let me", " think.", "\nHere", " is", " my", " resp", "onse", ":\n", "Hello", " world"]
SCRIPTS = {
    "split": SPLIT,
    "twice": ["Plan.\nHere is my response: Draft.", "\nHere is my response:", " Final."],
    "nomarker": ["Just", " an", " answer."],
}


class Scripted:
    """A Backend: the deltas of the script whose name the prompt contains, one token each;
    "[echo N]" gives a thought and a response that both name N."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.prompts: list[tuple[str, int]] = []

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def stream(self, prompt: str, params: SamplingParams, seed: int | None) -> Iterator[Delta]:
        self.prompts.append((prompt, params.max_new_tokens))
        echo = re.search(r"\[echo (\d+)\]", prompt)
        if echo:
            n = echo.group(1)
            script = ["Thinking", f" about {n}", ".\nHere is my", " response:", f" Answer {n}", "."]
        else:
            script = SCRIPTS[next(n for n in SCRIPTS if f"[{n}]" in prompt)]
        for text in script[: params.max_new_tokens]:
            time.sleep(0.001)  # let other requests' threads run in between
            yield Delta(text, 1)


def client(server: TpoHTTPServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=60)


def ask(cl: openai.OpenAI, text: str, stream: bool = False, **kw: Any) -> Any:
    messages = [{"role": "user", "content": text}]
    return cl.chat.completions.create(model="tpo-test", messages=messages, stream=stream, **kw)


def streamed(chunks: Any) -> tuple[list[str], list[str], list[Any]]:
    """(reasoning deltas, content deltas, raw chunks) of a stream, in order."""
    reasoning, content, raw = [], [], []
    for chunk in chunks:
        raw.append(chunk)
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            if extra.get("reasoning"):
                assert extra["reasoning_content"] == extra["reasoning"]
                assert not content, "a thought delta after the response started"
                reasoning.append(extra["reasoning"])
            if choice.delta.content:
                content.append(choice.delta.content)
    return reasoning, content, raw


def reasoning_of(message: Any) -> str | None:
    extra = message.model_extra or {}
    assert extra.get("reasoning_content") == extra.get("reasoning")
    return extra.get("reasoning")


@pytest.fixture(scope="module")
def tiny_engine(tiny) -> Engine:
    model, tokenizer = tiny
    return Engine(
        HFStreamer(model, tokenizer), tokenizer, GENERIC, thought_budget=3, context_length=1024
    )


@pytest.fixture(scope="module")
def scripted_server(tiny) -> Iterator[TpoHTTPServer]:
    tokenizer = tiny[1]
    engine = Engine(
        Scripted(tokenizer),
        tokenizer,
        GENERIC,
        no_marker="content",
        thought_budget=None,
        context_length=1024,
    )
    with running(engine, max_body_bytes=4096) as server:
        yield server


def test_openai_client_plain_and_streaming_on_the_tiny_model(tiny_engine):
    with running(tiny_engine) as server:
        cl = client(server)
        plain = ask(cl, "Name a colour.", max_tokens=8, temperature=1.0, seed=7)
        message = plain.choices[0].message
        reasoning = reasoning_of(message)
        assert reasoning and message.content  # forcing: 3 thought tokens, then the response
        assert MARK not in message.content and reasoning not in message.content
        assert plain.choices[0].finish_reason == "length"
        assert plain.usage.completion_tokens == 8 and plain.usage.prompt_tokens > 50
        stream = ask(cl, "Name a colour.", True, max_tokens=8, temperature=1.0, seed=7)
        thought, content, raw = streamed(stream)
        assert ("".join(thought), "".join(content)) == (reasoning, message.content)
        assert raw[0].choices[0].delta.role == "assistant"
        assert raw[-1].choices[0].finish_reason == "length"
        other = ask(cl, "Name a colour.", max_tokens=8, temperature=1.0, seed=8)
        assert other.choices[0].message.content != message.content  # the seed is used


def test_marker_split_across_tokens_never_reaches_content(scripted_server):
    cl = client(scripted_server)
    thought, content, raw = streamed(
        ask(cl, "[split]", True, stream_options={"include_usage": True})
    )
    assert content == ["Hello", " world"]
    assert "".join(thought) == "Let me think."
    assert raw[-1].usage.completion_tokens == len(SPLIT) and raw[-1].choices == []
    plain = ask(cl, "[split]").choices[0].message
    assert (reasoning_of(plain), plain.content) == ("Let me think.", "Hello world")


def test_two_markers_whole_answer_takes_the_last_stream_the_first(scripted_server):
    cl = client(scripted_server)
    plain = ask(cl, "[twice]").choices[0].message
    assert (reasoning_of(plain), plain.content) == ("Plan.\nHere is my response: Draft.", "Final.")
    thought, content, _ = streamed(ask(cl, "[twice]", True))
    assert "".join(thought) == "Plan."
    assert "".join(content) == "Draft.\n Final."  # the second marker itself is never shown


def test_no_marker_output_follows_the_setting(tiny):
    tokenizer = tiny[1]
    for no_marker, expected in (
        ("content", (None, "Just an answer.")),
        ("reasoning", ("Just an answer.", "")),
    ):
        engine = Engine(Scripted(tokenizer), tokenizer, GENERIC, no_marker=no_marker)
        with running(engine) as server:
            plain = ask(client(server), "[nomarker]").choices[0].message
            assert (reasoning_of(plain), plain.content) == expected
            thought, content, _ = streamed(ask(client(server), "[nomarker]", True))
            assert ("".join(thought) or None, "".join(content)) == expected


def test_fifty_concurrent_requests_do_not_mix(scripted_server):
    """Scripted answers that name their request, interleaved token by token across threads."""

    def request(i: int) -> tuple[str | None, str]:
        cl = client(scripted_server)
        if i % 2:
            message = ask(cl, f"[echo {i}]").choices[0].message
            return reasoning_of(message), message.content or ""
        thought, content, _ = streamed(ask(cl, f"[echo {i}]", True))
        return "".join(thought), "".join(content)

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(request, range(50)))
    assert answers == [(f"Thinking about {i}.", f"Answer {i}.") for i in range(50)]


@pytest.mark.slow
def test_fifty_concurrent_requests_on_the_tiny_model(tiny):
    """Half streamed, half not, all at once; each must equal the same request run alone
    (checked on every fifth; `test_fifty_concurrent_requests_do_not_mix` checks all 50)."""
    model, tokenizer = tiny
    engine = Engine(HFStreamer(model, tokenizer), tokenizer, GENERIC, context_length=1024)

    def request(i: int) -> str:
        cl = client(server)
        kw = {"max_tokens": 2, "temperature": 1.0, "seed": i}
        if i % 2:
            return ask(cl, f"Question number {i}?", **kw).choices[0].message.content or ""
        return "".join(streamed(ask(cl, f"Question number {i}?", True, **kw))[1])

    with running(engine) as server, ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(request, range(50)))
    assert len(set(answers)) > 40  # different prompts and seeds: different answers
    for i in range(0, 50, 5):  # a sample (streamed and not), to keep the test quick
        prompt = engine.render([{"role": "user", "content": f"Question number {i}?"}])
        assert answers[i] == engine.complete(prompt, SamplingParams(1.0, 1.0, 2), seed=i).content


def raw_request(
    server: TpoHTTPServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = json.loads(response.read())
    conn.close()
    return response.status, data


def chat_body(**fields: Any) -> bytes:
    body = {"model": "tpo-test", "messages": [{"role": "user", "content": "[split]"}], **fields}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


BAD_REQUESTS = [
    ("malformed JSON", b'{"model": "tpo-test", "messages": [', 400, "invalid_json"),
    ("not UTF-8", b'{"model": "\xff"}', 400, "invalid_json"),
    ("not an object", b"[1, 2]", 400, None),
    ("missing messages", chat_body(messages=...), 400, "messages"),
    ("empty messages", chat_body(messages=[]), 400, "messages"),
    ("messages not a list", chat_body(messages="hi"), 400, "messages"),
    ("unknown role", chat_body(messages=[{"role": "robot", "content": "x"}]), 400, "messages[0]"),
    ("content not text", chat_body(messages=[{"role": "user", "content": 3}]), 400, "messages[0]"),
    (
        "image part",
        chat_body(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
        400,
        "messages[0]",
    ),
    (
        "last is not user",
        chat_body(messages=[{"role": "assistant", "content": "x"}]),
        400,
        "messages",
    ),
    ("missing model", chat_body(model=...), 400, "model"),
    ("unknown model", chat_body(model="gpt-9"), 404, "model_not_found"),
    ("temperature negative", chat_body(temperature=-0.5), 400, "temperature"),
    ("temperature too high", chat_body(temperature=2.5), 400, "temperature"),
    ("temperature a string", chat_body(temperature="hot"), 400, "temperature"),
    ("top_p zero", chat_body(top_p=0), 400, "top_p"),
    ("top_p above one", chat_body(top_p=1.5), 400, "top_p"),
    ("max_tokens zero", chat_body(max_tokens=0), 400, "max_tokens"),
    ("max_tokens a float", chat_body(max_tokens=2.5), 400, "max_tokens"),
    ("max_tokens a bool", chat_body(max_tokens=True), 400, "max_tokens"),
    ("over the context", chat_body(max_completion_tokens=5000), 400, "max_tokens"),
    ("n of two", chat_body(n=2), 400, "n"),
    ("stream a string", chat_body(stream="yes"), 400, "stream"),
    ("negative seed", chat_body(seed=-1), 400, "seed"),
    ("huge seed", chat_body(seed=2**64), 400, "seed"),
    ("stop words", chat_body(stop=["x"]), 400, "stop"),
    ("tools", chat_body(tools=[{"type": "function"}]), 400, "tools"),
    ("presence penalty", chat_body(presence_penalty=1.0), 400, "presence_penalty"),
    (
        "json response format",
        chat_body(response_format={"type": "json_object"}),
        400,
        "response_format",
    ),
    (
        "json schema response format",
        chat_body(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
        400,
        "response_format",
    ),
    ("response format a string", chat_body(response_format="json"), 400, "response_format"),
    (
        "oversized body",
        chat_body(messages=[{"role": "user", "content": "x" * 5000}]),
        413,
        "body_too_large",
    ),
]


@pytest.mark.parametrize(
    ("why", "body", "status", "where"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_each_malformed_request_gets_a_4xx_json_error(scripted_server, why, body, status, where):
    got, data = raw_request(
        scripted_server, "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"}
    )
    assert got == status, data
    error = data["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    if where is not None:
        assert where in (error["param"], error["code"]), error
    ok, answer = raw_request(scripted_server, "POST", "/v1/chat/completions", chat_body())
    assert ok == 200 and answer["choices"][0]["message"]["content"] == "Hello world"


def raw_stream(conn: http.client.HTTPConnection, body: bytes) -> tuple[Any, bytes]:
    """POST a streamed request; the response and its body as bytes (http.client undoes the
    chunked transfer encoding, and raises on a malformed one)."""
    conn.request("POST", "/v1/chat/completions", body=body)
    response = conn.getresponse()
    return response, response.read()


def sse_events(body: bytes) -> list[str]:
    """The events of a server-sent-events body, checking its framing: every non-empty line
    is a `data: ` line, every event (one line here) ends with a blank line."""
    text = body.decode("utf-8")
    assert all(line.startswith("data: ") for line in text.split("\n") if line), text
    assert text.endswith("\n\n") and "\n\n\n" not in text, text
    events = text[:-2].split("\n\n")
    assert all(event.count("\n") == 0 for event in events), text
    return [event[len("data: ") :] for event in events]


def test_stream_bytes_are_server_sent_events(scripted_server):
    conn = http.client.HTTPConnection(scripted_server.host, scripted_server.port, timeout=30)
    body = chat_body(stream=True, stream_options={"include_usage": True})
    response, data = raw_stream(conn, body)
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    assert response.getheader("Transfer-Encoding") == "chunked"
    events = sse_events(data)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Hello world"
    assert "".join(d.get("reasoning") or "" for d in deltas) == "Let me think."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(SPLIT)
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    # the chunked body was ended properly: the same connection takes another request
    response, data = raw_stream(conn, chat_body())
    assert json.loads(data)["choices"][0]["message"]["content"] == "Hello world"
    conn.close()


class FailsAfterOneDelta:
    """A Backend whose generation fails after its first delta (a crash mid-stream)."""

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, prompt: str, params: SamplingParams, seed: int | None) -> Iterator[Delta]:
        yield Delta("Plan.\nHere is my response: Hi", 1)
        raise RuntimeError("the device fell over")


def test_a_failure_mid_stream_ends_with_an_error_event_then_done(tiny):
    engine = Engine(FailsAfterOneDelta(), tiny[1], GENERIC)
    with running(engine) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        response, data = raw_stream(conn, chat_body(stream=True))
        assert response.status == 200  # the headers went out before the failure
        events = sse_events(data)
        assert events[-1] == "[DONE]"
        *chunks, error = [json.loads(e) for e in events[:-1]]
        assert [c["choices"][0]["delta"] for c in chunks] == [
            {"role": "assistant", "content": ""},
            {"reasoning": "Plan.", "reasoning_content": "Plan.", "content": "Hi"},
        ]
        assert error["error"]["type"] == "server_error"
        assert "the device fell over" in error["error"]["message"]
        assert not any(c["choices"][0]["finish_reason"] for c in chunks)
        conn.close()


def test_text_response_format_is_accepted(scripted_server):
    status, answer = raw_request(
        scripted_server, "POST", "/v1/chat/completions", chat_body(response_format={"type": "text"})
    )
    assert status == 200 and answer["choices"][0]["message"]["content"] == "Hello world"
    with pytest.raises(openai.BadRequestError, match="response_format"):
        ask(client(scripted_server), "[split]", response_format={"type": "json_object"})


def test_protocol_errors(scripted_server):
    assert raw_request(scripted_server, "GET", "/v1/nothing")[0] == 404
    assert raw_request(scripted_server, "GET", "/v1/chat/completions")[0] == 405
    assert raw_request(scripted_server, "DELETE", "/v1/models")[0] == 405
    conn = http.client.HTTPConnection(scripted_server.host, scripted_server.port, timeout=30)
    conn.putrequest("POST", "/v1/chat/completions")
    conn.endheaders()  # no Content-Length
    response = conn.getresponse()
    assert (
        response.status == 411 and json.loads(response.read())["error"]["code"] == "length_required"
    )
    with pytest.raises(openai.NotFoundError):
        client(scripted_server).chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.BadRequestError):
        ask(client(scripted_server), "[split]", temperature=7)


def test_models_endpoint(scripted_server):
    models = client(scripted_server).models.list()
    assert [m.id for m in models.data] == ["tpo-test"]
    assert raw_request(scripted_server, "GET", "/v1/models/tpo-test")[1]["id"] == "tpo-test"
    assert raw_request(scripted_server, "GET", "/v1/models/other")[0] == 404


def test_api_key(tiny):
    tokenizer = tiny[1]
    engine = Engine(Scripted(tokenizer), tokenizer, GENERIC)
    with running(engine, api_key="s3cret") as server:
        with pytest.raises(openai.AuthenticationError):
            ask(client(server, "wrong"), "[split]")
        with pytest.raises(openai.AuthenticationError):
            client(server, "wrong").models.list()
        status, data = raw_request(server, "POST", "/v1/chat/completions", chat_body())
        assert status == 401 and data["error"]["type"] == "authentication_error"
        status, _ = raw_request(
            server, "GET", "/v1/models", headers={"Authorization": "Bearer caf\xe9"}
        )
        assert status == 401  # a non-ASCII key is a wrong key, not a server error
        assert raw_request(server, "GET", "/health") == (200, {"status": "ok"})
        answer = ask(client(server, "s3cret"), "[split]")
        assert answer.choices[0].message.content == "Hello world"


def test_api_keys_are_compared_in_constant_time(tiny, monkeypatch):
    """Every key a request brings goes through `hmac.compare_digest` (its time does not depend
    on where the bytes first differ), wrapped here to see each comparison; a wrong key of the
    right length and one of another length are both refused. With `==` in its place, no
    comparison would be seen and the first assertion would fail."""
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def watched(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", watched)
    tokenizer = tiny[1]
    engine = Engine(Scripted(tokenizer), tokenizer, GENERIC)
    with running(engine, api_key="s3cret") as server:
        for key, status in (
            ("s3cres", 401),
            ("s3", 401),
            ("s3cret-and-more", 401),
            ("s3cret", 200),
        ):
            headers = {"Authorization": f"Bearer {key}"}
            assert raw_request(server, "GET", "/v1/models", headers=headers)[0] == status, key
    assert seen == [
        (key.encode(), b"s3cret") for key in ("s3cres", "s3", "s3cret-and-more", "s3cret")
    ]


def test_default_max_tokens_is_cut_to_the_context_left(tiny):
    tokenizer = tiny[1]
    backend = Scripted(tokenizer)
    engine = Engine(
        backend, tokenizer, GENERIC, no_marker="content", thought_budget=None, context_length=1024
    )
    with running(engine, max_tokens=4096) as server:
        ask(client(server), "[split]")
        prompt, max_new_tokens = backend.prompts[-1]
        assert max_new_tokens == 1024 - backend.count_tokens(prompt)
        with pytest.raises(openai.BadRequestError, match="context"):
            ask(client(server), "[split]", max_tokens=4096)  # asked for: refused, not cut


def test_engine_prompt_is_the_training_prompt_and_wraps_only_the_last_user_turn(tiny):
    tokenizer = tiny[1]
    engine = Engine(Scripted(tokenizer), tokenizer, GENERIC)
    one = [{"role": "user", "content": "Write a haiku."}]
    assert engine.render(one) == build_prompt(tokenizer, GENERIC, "Write a haiku.")
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "Second question"},
    ]
    prompt = engine.render(turns)
    assert prompt.count("Query:") == 1 and "Query: Second question" in prompt
    assert "First question<|im_end|>" in prompt and "First answer<|im_end|>" in prompt
    assert "Be brief." in prompt and prompt.endswith("assistant\nHere is my thought process:\n")


def test_earlier_raw_outputs_go_back_to_the_model_as_their_response_only(tiny):
    """A client that sends an earlier answer back raw (thought, marker, response): the old
    thought and the marker never reach the model, through the server and through render()."""
    tokenizer = tiny[1]
    backend = Scripted(tokenizer)
    engine = Engine(backend, tokenizer, GENERIC)
    raw = "Here is my thought process:\nSecret old plan.\nHere is my response:\nOld draft."
    turns = [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": raw + "\nHere's my response:\n Answer one. "},
        {"role": "user", "content": "[split]"},
    ]
    with running(engine) as server:
        reply = client(server).chat.completions.create(model="tpo-test", messages=turns)
    assert reply.choices[0].message.content == "Hello world"
    prompt = backend.prompts[-1][0]
    assert prompt == engine.render(turns)
    assert "<|im_start|>assistant\nAnswer one.<|im_end|>" in prompt
    assert "Secret old plan" not in prompt and "Old draft" not in prompt
    assert "Here's my response" not in prompt
    # the marker is left only where the thought prompt of the last user turn quotes it
    alone = engine.render(turns[2:])
    assert prompt.count(MARK) == alone.count(MARK)
    kept = [{"role": "assistant", "content": "No marker: kept as written."}]
    assert "No marker: kept as written.<|im_end|>" in engine.render([*kept, turns[2]])


def test_budget_forcing_at_serve_time(tiny):
    tokenizer = tiny[1]
    backend = Scripted(tokenizer)
    engine = Engine(backend, tokenizer, GENERIC, no_marker="content", thought_budget=2)
    prompt = engine.render([{"role": "user", "content": "[nomarker]"}])
    answer = engine.complete(prompt, SamplingParams(1.0, 1.0, 10))
    (first, budget), (second, left) = backend.prompts
    assert (first, budget) == (prompt, 2)
    assert second == prompt + "Just an\n" + MARK + "\n" and left == 8
    assert (answer.reasoning, answer.content) == ("Just an", "Just an answer.")
    assert answer.completion_tokens == 5 and answer.finish_reason == "stop"
    chunks = list(engine.stream(prompt, SamplingParams(1.0, 1.0, 3)))
    assert "".join(c.content for c in chunks) == "Just"
    assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == 3


class Phases:
    """A Backend that answers a first call (the thought, under the budget) with `first` and
    the next (after the forced marker) with `second`, one token per delta, in turn."""

    def __init__(self, first: list[str], second: list[str]):
        self.scripts = (first, second)
        self.prompts: list[tuple[str, int]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, prompt: str, params: SamplingParams, seed: int | None) -> Iterator[Delta]:
        script = self.scripts[len(self.prompts) % 2]
        self.prompts.append((prompt, params.max_new_tokens))
        for text in script[: params.max_new_tokens]:
            yield Delta(text, 1)


FORCED_THOUGHTS = [
    "I will greet them. Then maybe",  # trimmed back to its finished sentence
    "Short. And then a long unfinished thought without any end",  # kept: the cut loses > half
    "Line one is here\nline two goes on and\n  ",  # kept
    "First line of the plan  \nsecond line is cut",  # trimmed at the line break
    "Is this a good greeting? Let us",  # trimmed after the "?"
    "One. Two. Three. Four. Five, six",  # trimmed after the last of several sentences
    "All done.",
    "Ends with a space. And more. ",
]


@pytest.mark.parametrize("thought", FORCED_THOUGHTS)
def test_forced_thought_is_trimmed_like_training_whole_and_streamed(tiny, thought):
    """Serve-time forcing continues from `trim_thought(thought)`, as training does; a stream
    sends exactly what the whole answer has, whatever the token boundaries."""
    tokenizer = tiny[1]
    kept = trim_thought(thought)
    head = kept + "\n" + MARK + "\n"
    params = SamplingParams(1.0, 1.0, 100)
    cuts = [[thought], list(thought)] + [[thought[:i], thought[i:]] for i in range(1, len(thought))]
    for deltas in cuts:
        for no_marker in ("content", "reasoning"):
            backend = Phases(deltas, [" Hi", " there."])
            engine = Engine(
                backend, tokenizer, GENERIC, no_marker=no_marker, thought_budget=len(deltas)
            )
            prompt = engine.render([{"role": "user", "content": "Greet me."}])
            answer = engine.complete(prompt, params)
            assert backend.prompts[1] == (prompt + head, 100 - len(deltas))
            assert (answer.reasoning, answer.content) == (kept.strip(), "Hi there.")
            chunks = list(engine.stream(prompt, params))
            assert backend.prompts[3] == (prompt + head, 100 - len(deltas))
            assert "".join(c.reasoning for c in chunks) == answer.reasoning, deltas
            assert "".join(c.content for c in chunks) == answer.content
            assert chunks[-1].completion_tokens == answer.completion_tokens == len(deltas) + 2


def test_forced_thought_never_streams_what_trimming_cuts(tiny):
    tokenizer = tiny[1]
    backend = Phases(["I will greet", " them.", " Then", " maybe"], ["Hello!"])
    engine = Engine(backend, tokenizer, GENERIC, no_marker="reasoning", thought_budget=4)
    prompt = engine.render([{"role": "user", "content": "Greet me."}])
    chunks = list(engine.stream(prompt, SamplingParams(1.0, 1.0, 20)))
    sent = [c.reasoning for c in chunks if c.reasoning]
    assert sent == ["I will greet them."]  # held until the sentence ended; "Then maybe" never
    assert "".join(c.content for c in chunks) == "Hello!"
    assert backend.prompts[1][0] == prompt + "I will greet them.\n" + MARK + "\n"
    # a thought that writes the marker itself is not held back or trimmed
    backend = Phases(["Plan it", "\nHere is my response:", " Hi", " there"], ["unused"])
    engine = Engine(backend, tokenizer, GENERIC, no_marker="reasoning", thought_budget=3)
    chunks = list(engine.stream(prompt, SamplingParams(1.0, 1.0, 3)))
    assert [(c.reasoning, c.content) for c in chunks if c.reasoning or c.content] == [
        ("Plan it", ""),
        ("", "Hi"),
    ]


def test_what_a_stream_sends_under_a_budget_is_never_trimmed_later():
    """The invariant the engine's hold-back rests on, over random texts and continuations."""
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice("ab .!?\n") for _ in range(rng.randrange(0, 30)))
        more = "".join(rng.choice("ab .!?\n") for _ in range(rng.randrange(0, 30)))
        sent = text[: finished_sentences(text)]
        assert trim_thought(text + more).startswith(sent), (text, more)


def test_hf_backend_streams_what_the_batch_generator_generates(tiny):
    model, tokenizer = tiny
    prompt = build_prompt(tokenizer, GENERIC, "Tell me about cats.")
    params = SamplingParams(1.0, 1.0, 12)
    deltas = list(HFStreamer(model, tokenizer).stream(prompt, params, seed=3))
    whole = HFGenerator(model, tokenizer, progress=False).generate([prompt], params, seed=3)[0]
    assert "".join(d.text for d in deltas) == whole.text
    assert sum(d.tokens for d in deltas) == whole.num_tokens == 12


def test_closing_a_stream_stops_generation_and_frees_the_model(tiny, monkeypatch):
    model, tokenizer = tiny
    pushed: list[int] = []
    original = hf_module._QueueStreamer.put

    def counting_put(self, value):
        pushed.append(1)
        original(self, value)

    monkeypatch.setattr(hf_module._QueueStreamer, "put", counting_put)
    backend = HFStreamer(model, tokenizer)
    prompt = build_prompt(tokenizer, GENERIC, "Go on forever.")
    stream = backend.stream(prompt, SamplingParams(1.0, 1.0, 400), seed=0)
    next(stream), next(stream)
    stream.close()
    assert not backend._generate_lock.locked()
    assert len(pushed) < 40  # not the 400 tokens asked for
