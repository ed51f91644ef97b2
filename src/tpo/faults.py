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
    cache:PATH      just before answers are written to the judge cache PATH (sqlite)
    loss:inf        not a kill: the DPO loss of that training step is made +inf (the NaN guard)

A point's place may be `*`: `TPO_FAULT=done:*` kills at the first stage this process finishes,
so a chain of runs with it stops once at every stage boundary. `TPO_FAULT=stop+POINT` stops
the process there with SIGSTOP instead (it goes on when sent SIGCONT): a test can then fill
the disk under a write that is about to happen.

`TPO_FAULT=inside:REGION@N` kills at the N-th Python function call made inside REGION: a
stage (its manifest key, from when the pipeline starts it until it is marked done) or a model
being saved (the model directory, ending in e.g. tpo/iter_1/model), counted with
`sys.setprofile` while the region is open, leaving out the calls imports make (so that N
falls in the region's own work, not in loading torch for it). The kill prints `fault: SIGKILL
inside REGION` on stderr, so a test can tell it landed inside. `TPO_FAULT_COUNT=FILE` counts
the calls of every region into FILE (`REGION CALLS` lines), for a test to draw N from.

A SIGKILL is the harshest way to stop: no `finally`, no flush, no atexit handler runs, like
a power cut of the process (the kernel still holds what was written). `tests/test_faults.py`
chains such kills through a whole run and compares every file with an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

_passed: dict[str, int] = {}
_open: dict[str, list[int]] = {}  # region -> [calls so far, the call to kill at (0: none)]


def _spec() -> tuple[str, int] | None:
    spec = os.environ.get("TPO_FAULT")
    if not spec:
        return None
    point, _, count = spec.rpartition("@") if "@" in spec else (spec, "", "1")
    return point, int(count or 1)


def _matches(where: str, here: str) -> bool:
    return where == "*" or here == where or (bool(where) and here.endswith("/" + where))


def armed(point: str) -> bool:
    """True when passing `point` now is the one `TPO_FAULT` names (a path point matches by
    its end), so the caller can leave a half-done state before calling `kill()`. A `stop+`
    point stops the process here (SIGSTOP) and returns False once it is continued."""
    spec = _spec()
    if spec is None:
        return False
    want, count = spec
    stop = want.startswith("stop+")
    kind, _, where = want.removeprefix("stop+").partition(":")
    here_kind, _, here = point.partition(":")
    if kind != here_kind or not _matches(where, here):
        return False
    _passed[want] = _passed.get(want, 0) + 1
    if stop and _passed[want] == count:
        os.kill(os.getpid(), signal.SIGSTOP)
        return False
    return _passed[want] == count


def kill(where: str) -> None:
    """SIGKILL this process, after saying where on stderr (for the test to check)."""
    print(f"[tpo] fault: SIGKILL {where}", file=sys.stderr)
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def reached(point: str) -> None:
    """SIGKILL this process if `TPO_FAULT` names `point` (see the module doc)."""
    if armed(point):
        kill(f"at {point}")


def watching() -> bool:
    """Whether any fault is set for this process (so callers can skip work for `begin`)."""
    return bool(os.environ.get("TPO_FAULT") or os.environ.get("TPO_FAULT_COUNT"))


_importing = 0  # how deep in module code (imports) the profiled thread is


def _profile(frame: Any, event: str, arg: Any) -> None:
    """Count the calls of every open region; the calls made by imports are left out, so a
    drawn call lands in the region's own work, not in loading torch for it."""
    global _importing
    if event not in ("call", "return"):
        return
    if frame.f_code.co_name == "<module>":
        _importing += 1 if event == "call" else -1
        return
    if event == "return" or _importing > 0:
        return
    for region, state in _open.items():
        state[0] += 1
        if state[0] == state[1]:
            kill(f"inside {region}, at its call {state[0]}")


def begin(region: str) -> None:
    """REGION starts (a stage's key, or a model directory being saved): see the module doc."""
    spec = _spec()
    target = 0
    if spec and spec[0].startswith("inside:") and _matches(spec[0].removeprefix("inside:"), region):
        target = spec[1]
    if not target and not os.environ.get("TPO_FAULT_COUNT"):
        return
    _open[region] = [0, target]
    sys.setprofile(_profile)


def end(region: str) -> None:
    """REGION is over (its stage is marked done, its model renamed into place)."""
    state = _open.pop(region, None)
    if state is None:
        return
    if not _open:
        sys.setprofile(None)
    count = os.environ.get("TPO_FAULT_COUNT")
    if count:
        with open(count, "a") as f:
            f.write(f"{region} {state[0]}\n")
    if state[1]:  # the region ended before its call state[1]: say so, and stop here
        kill(f"after {region} ended, at its call {state[0]} of the {state[1]} asked for")
