#!/usr/bin/env python
"""Runs :mod:`mae_transfer.cli.demo` (also ``mae-demo``); see ``--help``."""
from mae_transfer.cli.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
