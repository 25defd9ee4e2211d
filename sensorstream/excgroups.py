"""Exception groups at the edge of a library or a command.

Trio's nurseries are strict: whatever leaves one is wrapped in an exception
group. Inside the project that is right. At the edges, where a user's
`except KeyboardInterrupt`, `except Unauthorized` or trio's own cancellation
handling must see the exception itself, a group holding a single exception is
unwrapped back into it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """Every exception in `exc`, groups flattened."""
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            yield from leaves(e)
    else:
        yield exc


def single(exc: BaseException) -> BaseException:
    """The one exception a group stands for, or `exc` itself.

    Cancellations that came along are not counted: a group of Cancelled is one
    Cancelled (trio treats them alike), and KeyboardInterrupt + Cancelled is the
    KeyboardInterrupt (the Cancelled are its consequence). A group of several
    other exceptions is a real concurrency story and stays a group."""
    import trio

    found = list(leaves(exc))
    if not found:
        return exc
    others = [e for e in found if not isinstance(e, trio.Cancelled)]
    if len(others) == 1:
        return others[0]
    if not others:
        return found[0]
    return exc


@contextmanager
def unwrapped() -> Iterator[None]:
    """Re-raise a group of one as that one exception (KeyboardInterrupt, Cancelled...)."""
    try:
        yield
    except BaseExceptionGroup as eg:
        one = single(eg)
        if one is eg:
            raise
        raise one from one.__cause__  # keep its own cause; the group was only a wrapper
