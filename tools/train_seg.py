#!/usr/bin/env python
"""Runs :mod:`mae_transfer.cli.train_seg` (also ``mae-train-seg``); see ``--help``."""
from mae_transfer.cli.train_seg import main

if __name__ == "__main__":
    raise SystemExit(main())
