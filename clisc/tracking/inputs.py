"""The dataset and split of a run as an MLflow dataset input (the UI's "Dataset" column).

The input is an :mod:`mlflow.data` pandas dataset of the split table (``case_id, split``) named after
the data folder; its digest identifies fingerprint + split, and its profile carries the dataset
fingerprint, the split's digest and file name and the case counts per split.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from clisc.cache import stable_hash
from clisc.pipeline.result import MethodResult


def split_digest(split: pd.DataFrame) -> str:
    """sha256 (16 hex) of the split table as CSV (``case_id,split`` rows in order)."""
    text = split[["case_id", "split"]].to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_entity(result: MethodResult) -> Dataset | None:
    """The MLflow dataset of ``result``'s data and split; None when the result has no split."""
    split = result.split
    if split is None or split.empty:
        return None
    root = Path(result.data_root) if result.data_root else None
    fingerprint = result.tags.get("dataset", "")
    digest = split_digest(split)
    counts = {str(k): int(v) for k, v in split["split"].value_counts().items()}
    profile = {"fingerprint": fingerprint, "split_digest": digest, "split_file": result.tags.get("split_file", ""),
               "split_sha256": result.tags.get("split_sha256", ""),
               "cases": int(len(split)), **{f"cases_{k}": v for k, v in sorted(counts.items())},
               "synthetic": result.tags.get("synthetic_data", "")}
    source = str(root.resolve()) if root is not None else "unknown"
    name = root.name if root is not None and root.name else "dataset"
    with warnings.catch_warnings():  # "source can be interpreted in multiple ways": a local folder either way
        warnings.simplefilter("ignore", UserWarning)
        frame = mlflow.data.from_pandas(split[["case_id", "split"]].reset_index(drop=True), source=source,
                                        name=name, digest=stable_hash({"fingerprint": fingerprint, "split": digest}))
    entity = frame._to_mlflow_entity()
    return Dataset(entity.name, entity.digest, entity.source_type, entity.source, entity.schema,
                   json.dumps(profile))


def log_dataset_input(client: mlflow.MlflowClient, run_id: str, result: MethodResult) -> bool:
    """Log ``result``'s dataset + split as an input of ``run_id`` (context: the scored split)."""
    entity = dataset_entity(result)
    if entity is None:
        return False
    context = result.tags.get("scored_split", "test")
    client.log_inputs(run_id, datasets=[DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, context)])])
    return True
