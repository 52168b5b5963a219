"""Ablation studies: one factor at a time around a baseline, K seeds, paired statistics and a report.

spec (what to run, checked), grid (the runs), stats (intervals and tests over seeds),
learning_curve (power-law fits of data/fraction and k-shot), report (tables, CSV, plots).
Pure: nothing here trains or talks to Ray or MLflow.
"""
