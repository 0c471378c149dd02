#!/usr/bin/env python
"""Runs :mod:`mae_transfer.cli.pretrain_beit` (also ``mae-pretrain-beit``); see ``--help``."""
from mae_transfer.cli.pretrain_beit import main

if __name__ == "__main__":
    raise SystemExit(main())
