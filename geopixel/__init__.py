"""geopixel (see README)."""
