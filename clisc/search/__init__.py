"""Optuna searches of pipeline settings, tracked in MLflow."""
from clisc.search.study import run_search

__all__ = ["run_search"]
