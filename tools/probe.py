#!/usr/bin/env python
"""Runs :mod:`mae_transfer.cli.probe` (also ``mae-probe``); see ``--help``."""
from mae_transfer.cli.probe import main

if __name__ == "__main__":
    raise SystemExit(main())
