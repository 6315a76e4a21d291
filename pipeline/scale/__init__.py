"""Scale benchmarks and their inputs (bench code, not shipped data).

* :mod:`pipeline.scale.corpus`: synthetic iSAID-format sources of any size, made from the bundled real
  samples (mosaics of flipped and rotated copies at real iSAID image sizes).
* :mod:`pipeline.scale.replicate`: a described folder copied ``k`` times under new tile ids (same
  images), for the memory guards of the streaming stages.
* :mod:`pipeline.scale.measure`: wall time and peak RSS of a command's whole process tree.
* :mod:`pipeline.scale.bench`: ``make bench-scale``, the whole build at N and 8N.
"""
