"""How the command line fails: one line on stderr, ``maskrcnn-fast: error: ...`` naming the
option, exit status 2 for a bad argument (:class:`UsageError`), 1 when the work fails.

The library raises ValueError / TypeError naming its argument; :func:`usage_errors` turns those
raised while the arguments are read (weights, checkpoints, model keywords) into UsageError.
"""
import contextlib
import sys

__all__ = ["PROG", "UsageError", "need", "one_line", "print_error", "usage_errors"]

PROG = "maskrcnn-fast"


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


def one_line(e: BaseException) -> str:
    text = str(e)
    if "Original Traceback" in text:
        # re-raised from a DataLoader worker: its first line says only "Caught OSError in
        # DataLoader worker process 0"; the original's last line names the file
        return [line for line in text.splitlines() if line.strip()][-1].strip()
    return text.splitlines()[0] if text else ""


def need(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def print_error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


@contextlib.contextmanager
def usage_errors(type_prefix: str = ""):
    """ValueError / TypeError raised inside, as a UsageError with its first line (TypeError's
    after ``type_prefix``)."""
    try:
        yield
    except (ValueError, TypeError) as e:
        raise UsageError((type_prefix if isinstance(e, TypeError) else "") + one_line(e)) from None
