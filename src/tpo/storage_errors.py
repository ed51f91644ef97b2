"""A full disk, a read-only or unwritable directory, a file-size limit: one line for the user.

These faults surface from many libraries in many shapes: `OSError` with an errno from our own
writes, `SafetensorError` and tokenizers' errors from Rust ("No space left on device (os error
28)"), `sqlite3.OperationalError` ("database or disk is full"), `RuntimeError` from
`torch.save`. `describe` recognises them by errno, or by the operating system's message
anywhere in the exception or its causes, and says what to do: the run directory's files are
consistent after such an error (appends are all or nothing, whole files are renamed into
place, a model is saved under another name first), so the same command resumes once the
disk has room or the directory is writable again.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
_MESSAGES = {
    "no space left on device": "no space left on device",
    "disk is full": "no space left on device",
    "disk quota exceeded": "disk quota exceeded",
    "file too large": "file too large (a file-size limit)",
    "read-only file system": "read-only file system",
    "permission denied": "permission denied",
    "attempt to write a readonly database": "read-only file system",
}


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and node not in seen:
        seen.append(node)
        node = node.__cause__ or node.__context__
    return seen


def describe(exc: BaseException) -> str | None:
    """One line for a storage fault anywhere in `exc`'s chain, or None for anything else.

    >>> describe(OSError(28, "No space left on device", "x.json"))  # doctest: +ELLIPSIS
    'no space left on device (x.json): free some space and rerun the same command; ...'
    >>> describe(ValueError("bad value")) is None
    True
    """
    for e in _chain(exc):
        what, where = None, ""
        if isinstance(e, OSError) and e.errno in NO_SPACE + NOT_WRITABLE:
            what = (e.strerror or str(e)).lower()
            where = f" ({e.filename})" if e.filename else ""
        else:
            text = str(e).lower()
            what = next((v for k, v in _MESSAGES.items() if k in text), None)
        if what is None:
            continue
        if any(word in what for word in ("space", "quota", "too large")):
            fix = "free some space"
        else:
            fix = "make the directory writable"
        return f"{what}{where}: {fix} and rerun the same command; it resumes where it stopped"
    return None


@contextlib.contextmanager
def naming(path: object) -> Iterator[None]:
    """A storage fault inside the block that names no file (safetensors, tokenizers and torch
    say only "No space left on device (os error 28)") is raised again as an OSError naming
    `path`, what the block was writing; the original stays its cause.

    >>> with naming("run/iter_1/model.partial"):
    ...     raise RuntimeError("No space left on device (os error 28)")
    Traceback (most recent call last):
    ...
    OSError: [Errno 28] no space left on device: 'run/iter_1/model.partial'
    """
    try:
        yield
    except Exception as exc:
        line = describe(exc)
        if line is None or any(isinstance(e, OSError) and e.filename for e in _chain(exc)):
            raise
        what = line.split(":")[0]
        raise OSError(_ERRNO.get(what, errno.EIO), what, str(path)) from exc


_ERRNO = {  # describe()'s words for a fault named by message, as an errno
    "no space left on device": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "file too large (a file-size limit)": errno.EFBIG,
    "read-only file system": errno.EROFS,
    "permission denied": errno.EACCES,
}
