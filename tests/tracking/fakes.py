"""Hand-made MethodResults for the tracking, search and reporting tests (loaded by path from each
test folder's conftest, so it needs no package on sys.path)."""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from clisc.pipeline.result import MethodResult

GROUPS = ("tiny", "small", "medium", "large", "huge")


def per_case_table(dsc: Sequence[float], hd95: Sequence[float] | None = None, prefix: str = "case") -> pd.DataFrame:
    """Per-case table with the given Dice (%) values; case i is in group GROUPS[i % 5]."""
    n = len(dsc)
    hd = list(hd95) if hd95 is not None else [10.0 - d / 10 for d in dsc]
    return pd.DataFrame({
        "case_id": [f"{prefix}{i:03d}" for i in range(n)],
        "dsc": [float(d) for d in dsc],
        "hd95": [float(h) for h in hd],
        "gt_voxels": [1000 * (i % 5 + 1) for i in range(n)],
        "size_group": [GROUPS[i % 5] for i in range(n)],
        "empty": ["" for _ in range(n)],
    })


def fake_result(method: str, dsc: Sequence[float], seed: int = 0, **kwargs) -> MethodResult:
    """MethodResult of ``method`` with per-case Dice ``dsc`` and provenance tags of a real-weights run."""
    tags = {"protocol": "paper", "label_free": "true", "weights": "sam_vit_b=ec2df627", "synthetic_data": "false"}
    tags.update(kwargs.pop("tags", {}))
    return MethodResult(method=method, seed=seed, per_case=per_case_table(dsc, kwargs.pop("hd95", None)),
                        tags=tags, **kwargs)


def fold_results(method: str, dsc: list[float], k: int, seed: int = 0, tags: dict | None = None) -> list:
    """``method``'s per-case Dice ``dsc`` (cases case000..) cut into ``k`` fold runs (case i in fold i % k);
    ``tags``: extra tags by fold number."""
    whole = per_case_table(dsc)
    results = []
    for fold in range(1, k + 1):
        rows = whole.iloc[[i for i in range(len(dsc)) if i % k == fold - 1]].reset_index(drop=True)
        extra = {"fold": str(fold), "folds": str(k), "split_file": f"f{fold}.csv", **(tags or {}).get(fold, {})}
        result = fake_result(method, [0.0], seed=seed, params={"amda.alpha": 20.0}, tags=extra)
        result.per_case = rows
        results.append(result)
    return results


def fresh_store(tmp_path_factory) -> str:
    """URI of a new empty SQLite MLflow store, copied from one migrated template per test session
    (MLflow's schema migration takes 5-20 s on a loaded machine; a copy takes milliseconds)."""
    import shutil

    import mlflow

    template = tmp_path_factory.getbasetemp() / "mlflow-template.db"
    if not template.exists():
        building = template.with_suffix(".building")
        mlflow.MlflowClient(f"sqlite:///{building}").search_experiments()
        building.replace(template)
    target = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"
