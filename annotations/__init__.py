"""annotations (see README)."""
