"""MLflow tracking for medtune: the server (`server`), trial logging (`tracking`), Pareto (`pareto`).

Import the submodules directly; this package imports nothing heavy (no mlflow, ray or torch).
"""
