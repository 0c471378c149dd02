"""Errors a user can cause and fix, and how every command-line tool reports them.

Every user-facing error derives from :class:`UserError` (a ``ValueError``, so ``except ValueError``
keeps working) and carries ONE sentence that names the file or config key and what to do. The
entry points wrap their ``main`` in :func:`report_errors`, which prints ``<tool>: error: <sentence>``
to stderr and returns :data:`USER_ERROR_EXIT`; any other exception keeps its traceback.

This module imports nothing from the package, so every layer (core included) may raise these.
"""
from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Optional, Sequence

USER_ERROR_EXIT = 2  # like argparse's usage errors


class UserError(ValueError):
    """A problem in the user's inputs (config, checkpoint, dataset); the message says the fix."""


class ConfigError(UserError):
    """A config file, config key, override or command-line option that cannot be used."""


class DataError(UserError):
    """A dataset, annotation file or image that cannot be used."""


class MissingFileError(DataError, FileNotFoundError):
    """A file or folder the user must provide does not exist (also a ``FileNotFoundError``)."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read (missing, truncated, corrupt, not downloadable), is not a ViT
    in a known layout, or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that needs arbitrary code to unpickle, refused without ``--unsafe-load``."""


class NonFiniteLossError(UserError, FloatingPointError):
    """A training loss became NaN or infinite; training stopped before the weights took the step.

    Attributes:
        iteration: the iteration whose loss was non-finite (None if unknown).
        losses: loss term -> value at that iteration (empty if unknown).
        last_checkpoint: the checkpoint ``--resume`` continues from (None if unknown).
    """

    def __init__(self, message: str, iteration: Optional[int] = None,
                 losses: Optional[Mapping[str, float]] = None, last_checkpoint: Optional[str] = None):
        super().__init__(message)
        self.iteration, self.losses, self.last_checkpoint = iteration, dict(losses or {}), last_checkpoint


class LostRankError(UserError):
    """Another process of the run died or stopped answering; this rank stops too."""


class ComparisonError(UserError):
    """An initialisation or run directory a backbone comparison cannot use."""


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


def _user_error_from_child(error: BaseException) -> Optional[str]:
    """The sentence of a :class:`UserError` raised in a child process, else None.

    ``torch.multiprocessing`` re-raises a worker's exception as ``ProcessRaisedException`` whose
    message is the worker's traceback, ending in ``package.module.ErrorClass: sentence``.
    """
    text = str(error).strip()
    if "Traceback (most recent call last)" not in text:
        return None
    name, _, sentence = text.splitlines()[-1].partition(": ")
    module, _, cls_name = name.rpartition(".")
    if not module.startswith("mae_transfer"):
        return None
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError):
        return None
    if isinstance(cls, type) and issubclass(cls, UserError):
        return " ".join(sentence.split())
    return None


Main = Callable[[Optional[Sequence[str]]], int]


def report_errors(tool: str) -> Callable[[Main], Main]:
    """Decorate an entry point's ``main(argv=None) -> int``: a :class:`UserError` (also one raised in
    a spawned worker process) prints ``<tool>: error: <sentence>`` to stderr and returns
    :data:`USER_ERROR_EXIT`; any other exception propagates with its traceback."""

    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def wrapped(argv: Optional[Sequence[str]] = None) -> int:
            try:
                return main(argv)
            except UserError as error:
                sentence = one_sentence(error)
            except Exception as error:  # re-raised unless it is a worker's user error
                sentence = _user_error_from_child(error)
                if sentence is None:
                    raise
            print(f"{tool}: error: {sentence}", file=sys.stderr)
            return USER_ERROR_EXIT

        return wrapped

    return decorate
