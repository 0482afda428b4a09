"""The steps of MineWatch that join imagery, model and store: ingest, seed labels, train, score,
retrain cycles and the demo territory. The CLI (``run.py``) and the web app both call these."""
