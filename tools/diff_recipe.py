#!/usr/bin/env python
"""Runs :mod:`mae_transfer.cli.diff_recipe` (also ``mae-diff-recipe``); see ``--help``."""
from mae_transfer.cli.diff_recipe import main

if __name__ == "__main__":
    raise SystemExit(main())
