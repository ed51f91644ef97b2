"""Helpers for tests that run tpo in a subprocess."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """`preexec_fn` for a child that a test stops with SIGINT (Ctrl-C): a process started in
    the background by a non-interactive shell inherits SIGINT ignored, and Python then never
    raises KeyboardInterrupt, so the child gets SIGINT's default (Python's) handling back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
