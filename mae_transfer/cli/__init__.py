"""Command-line entry points: one module per tool with ``main(argv=None) -> int``; ``tools/NAME.py`` calls it."""
