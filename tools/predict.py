#!/usr/bin/env python
"""Runs :mod:`mae_transfer.cli.predict`; see ``--help``."""
from mae_transfer.cli.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
