#!/usr/bin/env python
"""Runs :mod:`mae_transfer.cli.train_det` (also ``mae-train-det``); see ``--help``."""
from mae_transfer.cli.train_det import main

if __name__ == "__main__":
    raise SystemExit(main())
