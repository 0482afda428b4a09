"""Simulated worlds and reviewers: the synthetic demo territory and the reviewer that measures
how many decisions a queue needs to reach a clean inventory.

``synthetic`` generates the SYNTHETIC 12-band territory and its truth (``build_demo``,
``truth_mine_fraction``), ``demo`` builds the demo installation from it (ingest, seed labels, a
first model, scores), ``inventory`` drives the real review queue with an oracle reviewer and
retrain cycles (``bench/inventory.py``). Nothing in ``pipeline``, ``review`` or ``labeller``
depends on this package.
"""
