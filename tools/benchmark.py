#!/usr/bin/env python
"""Runs :mod:`mae_transfer.cli.benchmark` (also ``mae-benchmark``); see ``--help``."""
from mae_transfer.cli.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
