#!/usr/bin/env python
"""Runs :mod:`mae_transfer.cli.export`; see ``--help``."""
from mae_transfer.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
