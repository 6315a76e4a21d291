"""geopixel: evaluate and train GeoPixel-style pixel-grounded captioning models (see geopixel/README.md).

:mod:`geopixel.eval` is torch-free; :mod:`geopixel.model`, :mod:`geopixel.train` and :mod:`geopixel.bench`
need torch, transformers and peft.
"""
