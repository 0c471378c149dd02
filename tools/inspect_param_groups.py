#!/usr/bin/env python
"""Runs :mod:`mae_transfer.cli.inspect_param_groups` (also ``mae-inspect-param-groups``); see ``--help``."""
from mae_transfer.cli.inspect_param_groups import main

if __name__ == "__main__":
    raise SystemExit(main())
