"""MLflow tracking for medtune: the server (`server`), trial logging (`tracking`), which trials count
and which is best (`selection`), Pareto artifacts (`pareto`).

Import the submodules directly; this package imports nothing heavy (no mlflow, ray or torch).
"""
