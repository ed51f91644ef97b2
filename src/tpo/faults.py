"""Fault injection for the crash tests: a process that kills itself with SIGKILL at a named point.

Inert unless the environment variable `TPO_FAULT` is set (nothing else reads it, and a
check is one dictionary lookup). `TPO_FAULT=POINT` kills the process the first time it passes
POINT, `TPO_FAULT=POINT@N` the N-th time (counted in this process). The points:

    done:KEY        just after the manifest records stage KEY as done (done:tpo/iter_1/judge)
    append:PATH     halfway through appending one batch of records to a JSONL file whose path
                    ends with PATH (append:tpo/iter_1/samples.jsonl): half of the bytes are
                    written and synced, then the process dies, as a crash mid-write leaves it
    write:PATH      a whole-file write of PATH is on disk under its temporary name, not yet
                    renamed into place (write:tpo/iter_1/eval.json)
    train:step      after an optimizer step of DPO training
    save:partial    the trained model is saved in model.partial, not yet checked and renamed
    save:renamed    the model was renamed into model/; train.json is not written yet

A SIGKILL is the harshest way to stop: no `finally`, no flush, no atexit handler runs, like
a power cut of the process (the kernel still holds what was written). `tests/test_faults.py`
chains such kills through a whole run and compares every file with an uninterrupted run.
"""

from __future__ import annotations

import os
import signal

_passed: dict[str, int] = {}


def _spec() -> tuple[str, int] | None:
    spec = os.environ.get("TPO_FAULT")
    if not spec:
        return None
    point, _, count = spec.rpartition("@") if "@" in spec else (spec, "", "1")
    return point, int(count or 1)


def armed(point: str) -> bool:
    """True when passing `point` now is the one `TPO_FAULT` names (a path point matches by
    its end), so the caller can leave a half-done state before calling `kill()`."""
    spec = _spec()
    if spec is None:
        return False
    want, count = spec
    kind, _, where = want.partition(":")
    here_kind, _, here = point.partition(":")
    if kind != here_kind or not (here == where or (where and here.endswith("/" + where))):
        return False
    _passed[want] = _passed.get(want, 0) + 1
    return _passed[want] == count


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def reached(point: str) -> None:
    """SIGKILL this process if `TPO_FAULT` names `point` (see the module doc)."""
    if armed(point):
        kill()
