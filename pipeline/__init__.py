"""The steps from imagery to scores that join imagery, model and store: ingest a year's files,
seed labels, train, score (locally or on Dask), the similarity index of the scores' embeddings,
retrain-and-repredict cycles, the background job runner, map tiles, and the one table of
settings. The CLI (``run.py``), the review domain (``review``) and the web app call these."""
