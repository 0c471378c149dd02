"""Errors a user can cause and fix, and how the command-line tools report them.

Every such error carries ONE sentence that names the file or config key and what to do. The tools
catch them in one place (their ``main``), print ``<tool>: error: <sentence>`` and exit non-zero,
without a traceback.
"""
from __future__ import annotations


class UserError(ValueError):
    """A problem in the user's inputs (config, checkpoint, dataset); the message says the fix."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exception classes the tools report as one sentence (the project's own user errors)."""
    from mae_transfer.checkpoints import CheckpointMismatchError, CheckpointReadError

    return (UserError, CheckpointReadError, CheckpointMismatchError)


def one_sentence(error: BaseException) -> str:
    """The message of ``error`` on one line.

    A DataLoader worker re-raises a worker's exception with the whole traceback as its message
    ("Caught X in DataLoader worker process 0. Original Traceback ..."); the sentence is its last line.
    """
    text = str(error).strip()
    if "Original Traceback" in text or "Traceback (most recent call last)" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())
