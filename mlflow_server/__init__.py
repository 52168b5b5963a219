"""MLflow tracking for medtune: the server and client settings (`server`), the Ray callback that logs
trials (`tracker`) through a durable write queue (`write_queue`), the tags and trial records read back
(`records`), which trials count and which is best (`selection`), Pareto artifacts (`pareto`).

Import the submodules directly; this package imports nothing heavy (no mlflow, ray or torch).
"""
