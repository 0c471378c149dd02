"""Small shared utilities (logging, paths)."""
