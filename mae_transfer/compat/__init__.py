"""Compatibility shims for the pinned stack (see README "Dependency stack")."""
