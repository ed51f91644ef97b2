"""`tpo chat`: talk to a thinking model in the terminal; only its response is shown.

The thought is internal, as in the paper: while the model thinks, a dim "thinking..." line
stands in for it and is erased when the response starts; `--show-thoughts` prints the thought
instead, live, dimmed and labelled, before the response. An output that ends without a
response marker is, under `--no-marker content` (the default), all response: the text shown
as the thought is then printed again as the response, and it is what the next turn sees.
Answers stream token by token through the same engine and splitter as `tpo serve`, and the
conversation is multi-turn: earlier turns go back to the model as the user wrote them and as
the responses (never the thoughts) it gave.

Commands: `/reset` starts a new conversation, `/exit` (or Ctrl-D) quits; Ctrl-C during an
answer stops that answer and keeps the chat.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tpo.generate import SamplingParams
from tpo.serve.engine import Engine

INDICATOR = "thinking..."
THOUGHT_LABEL = "thought: "
HELP = "type a message; /reset starts over, /exit or Ctrl-D quits"


class _Style:
    def __init__(self, tty: bool):
        self.tty = tty
        self.dim = "\033[2m" if tty else ""
        self.reset = "\033[0m" if tty else ""
        self.erase_line = "\r\033[K" if tty else "\n"


def chat(
    engine: Engine,
    params: SamplingParams,
    show_thoughts: bool = False,
    system: str | None = None,
    seed: int | None = None,
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    style = _Style(out.isatty())
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    base = [{"role": "system", "content": system}] if system else []
    history = list(base)
    print(f"tpo chat: {HELP}", file=out, flush=True)
    turn = 0
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print(file=out)
            return 0
        text = line.strip()
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            history = list(base)
            print("(new conversation)", file=out, flush=True)
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        turn_seed = None if seed is None else seed + turn
        turn += 1
        try:
            response = answer(engine, history, params, turn_seed, show_thoughts, out, style)
        except KeyboardInterrupt:
            history.pop()
            print(f"{style.reset}\n(answer stopped)", file=out, flush=True)
            continue
        history.append({"role": "assistant", "content": response})


def answer(
    engine: Engine,
    history: list[dict[str, str]],
    params: SamplingParams,
    seed: int | None,
    show_thoughts: bool,
    out: TextIO,
    style: _Style,
) -> str:
    """Stream one answer to `out`; return the response (what the next turn sees)."""
    indicator = in_thought = False
    parts: list[str] = []
    for chunk in engine.stream(engine.render(history), params, seed, live_thought=show_thoughts):
        if chunk.thinking and not indicator and not in_thought and not parts:
            out.write(f"{style.dim}{INDICATOR}{style.reset}")
            indicator = True
        if chunk.reasoning and show_thoughts:
            if indicator:
                out.write(style.erase_line)
                indicator = False
            if not in_thought:
                out.write(f"{style.dim}{THOUGHT_LABEL}")
                in_thought = True
            out.write(chunk.reasoning)
        if chunk.content:
            if indicator:
                out.write(style.erase_line)
                indicator = False
            if in_thought:
                out.write(f"{style.reset}\n")
                in_thought = False
            out.write(chunk.content)
            parts.append(chunk.content)
        out.flush()
    if indicator:
        out.write(style.erase_line)
    if in_thought:
        out.write(f"{style.reset}\n")
    if not parts:
        out.write("(no response: the output ended inside the thought)")
    out.write("\n")
    out.flush()
    return "".join(parts)
