"""The engine and the command-line tools.

Ray's `uv run` hook (RAY_ENABLE_UV_RUN_RUNTIME_ENV) packs the working folder and rebuilds the
environment for Ray's workers on every run of a driver started by `uv run`: 15-20 s each time,
for an environment that is already there (on every node of a cluster too: README, "Running on a
Ray cluster"). It is off unless the environment sets it. Ray reads the variable when it is first
imported, so this runs before any module of the engine imports Ray.
"""
import os

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
