"""`tpo chat`: in process on scripted answers, and the real command driven through a pty.

The in-process tests use a scripted `Backend` (fixed text deltas), so the exact screen output
and the prompts sent back to the model can be checked. The pty tests run
`python -m tpo.cli chat tiny-random` as a user would: the tiny random model writes random
words, so the thought and response are learnt from a `--show-thoughts` run and the same
seeded conversation without it must show the response, the indicator, and never the thought.
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tpo.config import PromptConfig
from tpo.generate import Delta, SamplingParams
from tpo.serve.chat import _Style, answer, chat
from tpo.serve.engine import Engine
from tpo.thoughts import thought_format

GENERIC = thought_format("tpo", PromptConfig())
PARAMS = SamplingParams(1.0, 1.0, 64)


class Scripted:
    """A Backend that answers turn N with a thought and a response naming N."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, prompt: str, params: SamplingParams, seed: int | None) -> Iterator[Delta]:
        self.prompts.append(prompt)
        n = len(self.prompts)
        for text in [f"Secret plan {n}.", "\nHere is my", " response:", f"\nAnswer {n}."]:
            yield Delta(text, 1)


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def engine_with(tiny) -> tuple[Engine, Scripted]:
    backend = Scripted()
    return Engine(backend, tiny[1], GENERIC), backend


def test_answer_hides_the_thought_behind_an_indicator(tiny):
    engine, _ = engine_with(tiny)
    out = FakeTTY()
    history = [{"role": "user", "content": "hi"}]
    response = answer(engine, history, PARAMS, None, False, out, _Style(True))
    assert response == "Answer 1."
    assert out.getvalue() == "\033[2mthinking...\033[0m\r\033[KAnswer 1.\n"
    out = io.StringIO()  # not a terminal: no escape codes, the indicator stays on its line
    answer(engine, history, PARAMS, None, False, out, _Style(False))
    assert out.getvalue() == "thinking...\nAnswer 2.\n"


def test_answer_shows_the_thought_when_asked(tiny):
    engine, _ = engine_with(tiny)
    out = FakeTTY()
    answer(engine, [{"role": "user", "content": "hi"}], PARAMS, None, True, out, _Style(True))
    assert out.getvalue() == (
        "\033[2mthinking...\033[0m\r\033[K\033[2mthought: Secret plan 1.\033[0m\nAnswer 1.\n"
    )


class Watching:
    """A Backend that yields fixed deltas and notes what the screen shows each time the next
    delta is asked for, i.e. after the chat has handled the previous one."""

    def __init__(self, deltas: list[str], out: io.StringIO):
        self.deltas = deltas
        self.out = out
        self.screens: list[str] = []
        self.prompts: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, prompt: str, params: SamplingParams, seed: int | None) -> Iterator[Delta]:
        self.prompts.append(prompt)
        for text in self.deltas:
            yield Delta(text, 1)
            self.screens.append(self.out.getvalue())


def test_shown_thoughts_are_live_under_the_default_no_marker_rule(tiny):
    out = FakeTTY()
    deltas = ["Secret plan.", " More thought.", "\nHere is my", " response:", "\nAnswer."]
    backend = Watching(deltas, out)
    engine = Engine(backend, tiny[1], GENERIC)  # no_marker="content", the default
    history = [{"role": "user", "content": "hi"}]
    response = answer(engine, history, PARAMS, None, True, out, _Style(True))
    assert response == "Answer."
    assert backend.screens[0].endswith("\033[2mthought: Secret plan.")  # before the marker
    assert backend.screens[1].endswith("Secret plan. More thought.")
    assert out.getvalue() == (
        "\033[2mthinking...\033[0m\r\033[K"
        "\033[2mthought: Secret plan. More thought.\033[0m\nAnswer.\n"
    )
    # hidden thoughts: nothing but the indicator until the response
    out = FakeTTY()
    backend = Watching(deltas, out)
    answer(Engine(backend, tiny[1], GENERIC), history, PARAMS, None, False, out, _Style(True))
    assert all("Secret" not in screen for screen in backend.screens)


def test_shown_thought_without_a_marker_is_then_shown_and_kept_as_the_response(tiny, monkeypatch):
    out = FakeTTY()
    backend = Watching(["Just", " an", " answer."], out)
    engine = Engine(backend, tiny[1], GENERIC)
    history = [{"role": "user", "content": "hi"}]
    response = answer(engine, history, PARAMS, None, True, out, _Style(True))
    assert response == "Just an answer."  # the no_marker="content" rule, as without the flag
    assert backend.screens[0].endswith("thought: Just")  # live
    assert out.getvalue() == (
        "\033[2mthinking...\033[0m\r\033[K\033[2mthought: Just an answer.\033[0m\nJust an answer.\n"
    )
    out = FakeTTY()
    backend = Watching(["Just", " an", " answer."], out)
    engine = Engine(backend, tiny[1], GENERIC)
    assert answer(engine, history, PARAMS, None, False, out, _Style(True)) == "Just an answer."
    assert out.getvalue() == "\033[2mthinking...\033[0m\r\033[KJust an answer.\n"
    # and the next turn gets it back as the answer
    lines = iter(["first", "second", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    backend = Watching(["Just", " an", " answer."], io.StringIO())
    chat(Engine(backend, tiny[1], GENERIC), PARAMS, show_thoughts=True, out=io.StringIO())
    assert "<|im_start|>assistant\nJust an answer.<|im_end|>" in backend.prompts[1]


def test_chat_is_multi_turn_and_sends_back_responses_only(tiny, monkeypatch):
    engine, backend = engine_with(tiny)
    lines = iter(["first question", "", "second question", "/reset", "third", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    out = io.StringIO()
    assert chat(engine, PARAMS, system="Be brief.", out=out) == 0
    first, second, third = backend.prompts
    assert "Query: first question" in first
    assert "Answer 1." in second and "Secret plan 1." not in second
    assert second.count("Query:") == 1 and "Query: second question" in second
    assert "Be brief." in third and "first question" not in third  # /reset forgot the turns
    text = out.getvalue()
    assert "Answer 1." in text and "Answer 3." in text and "Secret plan" not in text
    assert "(new conversation)" in text


def test_chat_ends_on_eof(tiny, monkeypatch):
    engine, _ = engine_with(tiny)

    def eof(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr("builtins.input", eof)
    assert chat(engine, PARAMS, out=io.StringIO()) == 0


def run_chat(args: list[str], lines: list[bytes], tmp_path) -> tuple[str, int]:
    """Run `tpo chat` on a pseudo-terminal: wait for each `you> ` prompt, type a line."""
    master, slave = pty.openpty()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    errors = open(tmp_path / "stderr.txt", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tpo.cli", "chat", "tiny-random", *args],
        stdin=slave,
        stdout=slave,
        stderr=errors,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 180

    def read(until: int | None) -> None:
        nonlocal output
        while until is None or output.count(b"you> ") < until:
            assert time.monotonic() < deadline, output.decode(errors="replace")
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                piece = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                return
            if not piece:
                return
            output += piece

    try:
        for i, line in enumerate(lines):
            read(i + 1)
            os.write(master, line)
        read(None)
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
        os.close(master)
        errors.close()
    assert code == 0, (tmp_path / "stderr.txt").read_text()[-2000:]
    return output.decode(errors="replace"), code


CHAT_ARGS = ["--temperature", "1", "--seed", "11", "--thought-budget", "4", "--max-tokens", "10"]


@pytest.mark.slow
def test_chat_through_a_pty_hides_thoughts_and_shows_them_on_request(tmp_path):
    turns = [b"hello there\n", b"and once more\n"]
    shown, _ = run_chat([*CHAT_ARGS, "--show-thoughts"], [*turns, b"/exit\n"], tmp_path)
    pairs = re.findall(r"thought: (.*?)\x1b\[0m\r\n(.*?)\r\n", shown, re.DOTALL)
    assert len(pairs) == 2, shown
    hidden, _ = run_chat(CHAT_ARGS, [*turns, b"\x04"], tmp_path)  # Ctrl-D ends it
    assert hidden.count("thinking...") == 2
    assert "thought:" not in hidden and "Here is my response" not in hidden
    assert "Here is my response" not in shown
    for thought, response in pairs:
        assert thought.strip() and response.strip()
        assert response in hidden  # the same seeded answers, without their thoughts
        assert thought.strip() not in hidden


@pytest.mark.slow
def test_chat_through_a_pty_shows_a_markerless_thought_live_then_as_the_response(tmp_path):
    """No budget forcing: the tiny random model writes no response marker, so under the
    default `--no-marker content` its output is the response. `--show-thoughts` shows it as the
    thought while it streams, then as the response; without the flag, only as the response."""
    args = ["--temperature", "1", "--seed", "5", "--thought-budget", "off", "--max-tokens", "6"]
    shown, _ = run_chat([*args, "--show-thoughts"], [b"hello there\n", b"/exit\n"], tmp_path)
    pairs = re.findall(r"thought: (.*?)\x1b\[0m\r\n(.*?)\r\nyou> ", shown, re.DOTALL)
    assert len(pairs) == 1, shown
    thought, response = pairs[0]
    assert thought.strip() and thought == response
    hidden, _ = run_chat(args, [b"hello there\n", b"/exit\n"], tmp_path)
    assert f"thinking...\x1b[0m\r\x1b[K{response}\r\nyou> " in hidden, hidden
    assert "thought:" not in hidden
