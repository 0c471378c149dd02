#!/usr/bin/env python
"""Runs :mod:`mae_transfer.cli.compare` (also ``mae-compare``); see ``--help``."""
from mae_transfer.cli.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
