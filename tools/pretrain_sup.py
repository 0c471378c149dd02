#!/usr/bin/env python
"""Runs :mod:`mae_transfer.cli.pretrain_sup` (also ``mae-pretrain-sup``); see ``--help``."""
from mae_transfer.cli.pretrain_sup import main

if __name__ == "__main__":
    raise SystemExit(main())
