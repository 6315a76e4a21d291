"""flows (see README)."""
