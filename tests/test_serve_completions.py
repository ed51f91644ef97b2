"""`tpo serve`'s `POST /v1/completions`: a raw prompt continued as it is, over real HTTP.

`Words` is a StreamingGenerator that writes " w0 w1 ..." one token a word (ending with EOS
after N words when the prompt says "[len N]"), so the text, the finish reason and the usage
of each answer are known exactly; the engine under it has a thought budget set, which a raw
completion must ignore. The tiny model checks the real `openai` client against it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest

from servers import running
from tpo.config import PromptConfig
from tpo.generate import Delta, SamplingParams
from tpo.generate.hf import HFStreamer
from tpo.serve.engine import Engine
from tpo.serve.server import TpoHTTPServer
from tpo.thoughts import thought_format

GENERIC = thought_format("tpo", PromptConfig())


class Words:
    def __init__(self) -> None:
        self.calls: list[tuple[str, SamplingParams, int | None]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, prompt: str, params: SamplingParams, seed: int | None) -> Iterator[Delta]:
        self.calls.append((prompt, params, seed))
        found = re.search(r"\[len (\d+)\]", prompt)
        n = int(found.group(1)) if found else 1 << 30
        for i in range(min(n, params.max_new_tokens)):
            yield Delta(f" w{i}", 1, eos=i == n - 1)


@pytest.fixture
def words(tiny) -> Iterator[tuple[TpoHTTPServer, Words]]:
    backend = Words()
    engine = Engine(backend, tiny[1], GENERIC, thought_budget=2, context_length=64)
    with running(engine) as server:
        yield server, backend


def post(server: TpoHTTPServer, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/completions", json={"model": "tpo-test", **body}, timeout=30)


def test_the_prompt_is_continued_as_it_is(words):
    server, backend = words
    answer = post(server, prompt="Once upon [len 3]", max_tokens=5, seed=7, temperature=0.5)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "text_completion" and body["model"] == "tpo-test"
    # no chat template, no thought prompt, no forcing (the engine's budget of 2 is not applied)
    assert backend.calls == [("Once upon [len 3]", SamplingParams(0.5, 1.0, 5), 7)]
    assert body["choices"] == [
        {"index": 0, "text": " w0 w1 w2", "finish_reason": "stop", "logprobs": None}
    ]
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    cut = post(server, prompt=["Once"], max_tokens=4).json()  # a list of one prompt is fine
    assert cut["choices"][0]["text"] == " w0 w1 w2 w3"
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 4


def test_n_choices_are_seeded_one_after_another(words):
    server, backend = words
    body = post(server, prompt="Hi [len 2]", max_tokens=8, seed=7, n=3).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [seed for _, _, seed in backend.calls] == [7, 8, 9]
    assert body["usage"]["completion_tokens"] == 3 * 2


def test_default_max_tokens_is_cut_to_the_context_left(words):
    server, backend = words
    assert post(server, prompt="one two three four").status_code == 200
    assert backend.calls[-1][1].max_new_tokens == 64 - 4  # the server default 512, cut
    too_long = post(server, prompt="one two three four", max_tokens=61)
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({}, 400, "prompt"),
        ({"prompt": [1, 2, 3]}, 400, "prompt"),  # token ids
        ({"prompt": ["a", "b"]}, 400, "prompt"),  # several prompts
        ({"prompt": "a", "stream": True}, 400, "stream"),
        ({"prompt": "a", "echo": True}, 400, "echo"),
        ({"prompt": "a", "suffix": "z"}, 400, "suffix"),
        ({"prompt": "a", "n": 0}, 400, "n"),
        ({"prompt": "a", "n": 65}, 400, "n"),
        ({"prompt": "a", "n": 2, "best_of": 3}, 400, "best_of"),
        ({"prompt": "a", "stop": ["\n"]}, 400, "stop"),
        ({"prompt": "a", "logprobs": 2}, 400, "logprobs"),
        ({"prompt": "a", "temperature": 3}, 400, "temperature"),
        ({"prompt": "a", "max_tokens": 0}, 400, "max_tokens"),
        ({"prompt": "a", "seed": -1}, 400, "seed"),
        ({"prompt": "a", "model": "other"}, 404, "model"),
    ],
)
def test_each_bad_request_is_a_4xx_naming_the_field(words, body, status, param):
    server, backend = words
    answer = post(server, **body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["message"]
    assert backend.calls == []  # refused before any generation


def test_get_is_not_allowed(words):
    server, _ = words
    answer = httpx.get(f"{server.url}/completions", timeout=30)
    assert answer.status_code == 405 and answer.json()["error"]["code"] == "method_not_allowed"


def test_the_openai_client_on_the_tiny_model(tiny):
    model, tokenizer = tiny
    engine = Engine(HFStreamer(model, tokenizer), tokenizer, GENERIC, context_length=1024)
    with running(engine) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)
        ask = {"model": "tpo-test", "prompt": "The cat", "max_tokens": 5, "seed": 3}
        first = client.completions.create(**ask)
        again = client.completions.create(**ask)
    choice = first.choices[0]
    assert choice.finish_reason in ("stop", "length") and isinstance(choice.text, str)
    assert first.usage is not None and 1 <= first.usage.completion_tokens <= 5
    assert first.usage.prompt_tokens == len(tokenizer("The cat")["input_ids"])
    assert again.choices[0].text == choice.text  # seeded
