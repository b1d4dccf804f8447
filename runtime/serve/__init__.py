"""`infolens serve` (DESIGN §10): the HTTP API (app.py), job records in SQLite (jobs.py), the device's worker that
runs jobs in chunks round-robin (worker.py), the served models and request parameters (models.py), Prometheus
metrics (metrics.py).  Needs the `serve` extra (FastAPI, uvicorn, prometheus-client)."""
