"""Detection / segmentation pipeline timings (Mask R-CNN, UperNet) and data-loading throughput.

Not implemented yet: each case reports a ``skipped`` row with the reason, so the benchmark
still runs end to end and the table shows what is missing.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch

__all__ = ["run"]

_WHAT = {
    "det": "Mask R-CNN train step / inference per image (mae_transfer.det)",
    "seg": "UperNet train step / slide inference (mae_transfer.seg)",
    "data": "data loading throughput vs step time (det and seg)",
}


def run(case: str, *, device: torch.device, quick: bool, amp: Optional[str]) -> List[Dict]:
    """Rows ``{"task", "case", "value", "unit", "note"}`` or ``{"task", "case", "skipped"}``."""
    return [{"task": case, "case": _WHAT[case], "skipped": "not implemented in this version"}]
