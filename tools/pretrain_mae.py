#!/usr/bin/env python
"""Runs :mod:`mae_transfer.cli.pretrain_mae` (also ``mae-pretrain-mae``); see ``--help``."""
from mae_transfer.cli.pretrain_mae import main

if __name__ == "__main__":
    raise SystemExit(main())
