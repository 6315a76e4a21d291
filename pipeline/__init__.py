"""geopixeld: build pixel-grounded remote-sensing conversation datasets (GeoPixelD style)."""

__version__ = "0.1.0"
