"""Territory analyses over reviewed cells: the seed study's outputs.

Clip to a territory (``territory``), classify each cell-year (``status``), follow cells across the
years (``change``), buffer mine points into a mining area (``area``), count mines in protected
areas (``protected``), and turn it all into a report (``report``) and files for QGIS (``export``).
Everything reads through ``db.store.Store``; geometry is shapely / pyproj / pyogrio, in the grid's
equal-area CRS.
"""

from __future__ import annotations


class AnalysisError(ValueError):
    """A request the analyses cannot answer (no model, a year without scores, ...); the message
    says why."""
