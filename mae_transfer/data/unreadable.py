"""Images a data loader cannot use (undecodable, truncated, of another size than annotated): the
run stops naming the file, or, when the user asked, the image is skipped and counted.

The same rule in both frameworks: Detectron2's mapper (:class:`mae_transfer.det.data.CheckedMapper`)
and MMSeg's loading transform (:class:`mae_transfer.seg.transforms.CheckedLoadImageFromFile`) return
None for a skipped image, and their datasets then draw another one.
"""
from __future__ import annotations

from mae_transfer.errors import UserError
from mae_transfer.utils.logger import get_logger

logger = get_logger(__name__)


def error_reason(err: BaseException) -> str:
    """An exception's message on one line (its class name when it has none)."""
    return " ".join(str(err).split()) or type(err).__name__


class UnreadableImages:
    """Raise :class:`UserError` for an image that cannot be used, or skip it and log the count.

    Args:
        skip: skip (count and log) instead of raising.
        how_to_skip: the option that turns skipping on, for the message (``"set X True"``).
    """

    def __init__(self, skip: bool, how_to_skip: str) -> None:
        self.skip, self.how_to_skip, self.skipped = skip, how_to_skip, 0

    def handle(self, name: str, reason: str, fix: str = "replace it") -> None:
        """Deal with image file ``name`` that failed for ``reason``; returns only when it is skipped."""
        if not self.skip:
            raise UserError(f"Image file {name} cannot be used ({reason}); {fix}, or {self.how_to_skip}.")
        self.skipped += 1
        logger.warning("Skipped unreadable image %s (%s); %d skipped so far in this process.",
                       name, reason, self.skipped)
