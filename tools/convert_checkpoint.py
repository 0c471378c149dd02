#!/usr/bin/env python
"""Runs :mod:`mae_transfer.cli.convert_checkpoint` (also ``mae-convert-checkpoint``); see ``--help``."""
from mae_transfer.cli.convert_checkpoint import main

if __name__ == "__main__":
    raise SystemExit(main())
