"""Compare a shipped recipe with its reference implementation (see mae_transfer/cli/diff_recipe.py)."""
import sys
from mae_transfer.cli.diff_recipe import main
sys.exit(main())
