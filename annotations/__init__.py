"""The annotator review app: queue, sample view, accept/reject/fix decisions, audit log and export.

Modules: ``app`` (FastAPI factory ``create_app``), ``cli`` (``geopixeld review ...``), ``db`` (tables),
``auth`` (accounts, sessions, CSRF), ``queue`` (order and sticky assignment), ``decisions`` (optimistic
locking), ``validate`` (``validate_fixed``), ``samples`` (the data directory), ``export``
(``load_decisions``), ``bench`` (time to first render in Chromium). See README.md.
"""
