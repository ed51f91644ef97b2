"""Helpers for tests that run tpo in a subprocess."""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path


def default_sigint() -> None:
    """`preexec_fn` for a child that a test stops with SIGINT (Ctrl-C): a process started in
    the background by a non-interactive shell inherits SIGINT ignored, and Python then never
    raises KeyboardInterrupt, so the child gets SIGINT's default (Python's) handling back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def serve_process(args: list[str], stderr: Path, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """`tpo serve ARGS` as a child process whose stderr goes to the file `stderr`: waits up to
    180 s for its "listening on" line, yields (process, the line, its /v1 base URL), and kills
    the process on the way out."""
    errors = open(stderr, "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tpo.cli", *args],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        env=env,
        preexec_fn=default_sigint,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 180)
        assert ready, "no startup line in 180 s"
        line = proc.stdout.readline()  # the server is up (or the process died: empty line)
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+/v1)", line)
        assert match, line + stderr.read_text()[-2000:]
        yield proc, line, match.group(1)
    finally:
        proc.kill()
        errors.close()
