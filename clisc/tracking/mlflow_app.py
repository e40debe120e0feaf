"""The ``clisc`` MLflow server app (``mlflow ui --app-name clisc``, the ``mlflow.app`` entry point in
pyproject.toml): MLflow's own server, whose UI opens in its model-training view in a fresh browser.

Why: MLflow 3's UI shows every experiment as GenAI (traces overview, assistant pane) until the user
picks "Model training" in its sidebar switch, whatever the experiment's ``mlflow.experimentKind`` tag
says; the choice lives only in the browser's ``localStorage`` (key ``mlflow.workflowType_v1``, default
GenAI; upstream mlflow/mlflow#24498) and MLflow has no server setting for it. This app serves MLflow's
``index.html`` with one script that sets that key to model training when the browser has no choice
yet, so Home -> Experiments -> an experiment lands on its runs table, and a later pick of the switch
is kept as MLflow keeps it. A second script gives the runs table of an experiment the browser has no
saved view of the result's columns (DSC, HD95, label-free) and the latest parent run expanded (its
children, named by table title, shown). Everything else is MLflow's app unchanged.
"""
from __future__ import annotations

import json
from typing import Any

APP_NAME = "clisc"
WORKFLOW_TYPE_KEY = "mlflow.workflowType_v1"  # MLflow's useLocalStorage key: `${key}_v${version}`
MODEL_TRAINING = "machine_learning"
# browser defaults (JSON values, set only where the browser has none): the model-training view, and
# the GenAI assistant pane counted as already opened once (MLflow opens it on a browser's first load)
BROWSER_DEFAULTS = {WORKFLOW_TYPE_KEY: json.dumps(MODEL_TRAINING),
                    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": json.dumps(True)}
DEFAULT_VIEW_SCRIPT = "<script>try{var d=%s;for(var k in d)if(localStorage.getItem(k)===null)" \
    "localStorage.setItem(k,d[k])}catch(e){}</script>" % json.dumps(BROWSER_DEFAULTS)
# the runs table's columns for an experiment the browser has no saved view of: the result, not only
# MLflow's Source / Models / Dataset (ids as MLflow's UI names them: `<kind>.\`<key>\``)
RUNS_COLUMNS = ["metrics.`dsc_mean`", "metrics.`hd95_mean`", "tags.`label_free`", "metrics.`n_cases`",
                "attributes.`Dataset`"]
RUNS_COLUMN_WIDTHS = {"attributes.`Run Name`": 300}  # room for "SAM (prompts from ground truth) · seed 0"
# MLflow applies widths to the columns of a saved order only: the result first, then its own columns
RUNS_COLUMN_ORDER = ["attributes.`Run Name`", "metrics.`dsc_mean`", "metrics.`hd95_mean`", "tags.`label_free`",
                     "metrics.`n_cases`", "duration", "runDateAndNestInfo", "attributes.`Dataset`"]
# MLflow keeps an experiment page's view (columns, expanded runs, sort) in localStorage under this key
RUNS_VIEW_KEY = r"^MLflowLocalStorage-1\.1-ExperimentPage-\[\"([^\"]+)\"\]-ReactComponentState$"


def runs_view_script(expanded: dict[str, list[str]]) -> str:
    """A script giving MLflow's runs table :data:`RUNS_COLUMNS` and the parent runs ``expanded``
    (experiment id -> run ids, their children shown) for every experiment whose view the browser has
    not saved; once the user changes the view, MLflow saves it and this default no longer applies."""
    default = {"selectedColumns": RUNS_COLUMNS, "columnWidths": RUNS_COLUMN_WIDTHS, "columnOrder": RUNS_COLUMN_ORDER}
    views = {exp: {**default, "runsExpanded": {run: True for run in runs}} for exp, runs in expanded.items()}
    return ("<script>try{var V=%s,D=%s,R=new RegExp(%s),g=Storage.prototype.getItem;"
            "Storage.prototype.getItem=function(k){var v=g.call(this,k),m;"
            "if(v===null&&(m=R.exec(k)))return JSON.stringify(V[m[1]]||D);return v}}catch(e){}</script>"
            % (json.dumps(views), json.dumps(default), json.dumps(RUNS_VIEW_KEY)))


def parent_runs() -> dict[str, list[str]]:
    """Experiment id -> the latest clisc parent run (``clisc.role=experiment``) of each experiment in the
    served store; empty when the store cannot be read (the columns default still applies)."""
    try:
        from mlflow.entities import ViewType
        from mlflow.server.handlers import _get_tracking_store

        store = _get_tracking_store()
        found: dict[str, list[str]] = {}
        for experiment in store.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=200):
            runs = store.search_runs([experiment.experiment_id], "tags.`clisc.role` = 'experiment'",
                                     ViewType.ACTIVE_ONLY, max_results=1, order_by=["start_time DESC"])
            if runs:
                found[experiment.experiment_id] = [runs[0].info.run_id]
        return found
    except Exception:  # noqa: BLE001  (a page without the expansion beats no page)
        return {}


def with_default_view(html: str, expanded: dict[str, list[str]] | None = None) -> str:
    """``html`` (MLflow's index.html) with :data:`DEFAULT_VIEW_SCRIPT` and :func:`runs_view_script`
    first in its ``<head>``, so they run before the UI's bundle reads the stored choices."""
    if DEFAULT_VIEW_SCRIPT in html:
        return html
    scripts = DEFAULT_VIEW_SCRIPT + runs_view_script(expanded or {})
    at = html.find("<head>")
    return (html[: at + 6] + scripts + html[at + 6:]) if at >= 0 else scripts + html


def patch_index(flask_app: Any) -> None:
    """Wrap the Flask view that serves ``index.html`` (endpoint ``serve``) with :func:`with_default_view`."""
    original = flask_app.view_functions["serve"]
    if getattr(original, "_clisc_default_view", False):
        return

    def serve() -> Any:
        response = flask_app.make_response(original())
        if response.mimetype == "text/html":
            response.direct_passthrough = False
            response.set_data(with_default_view(response.get_data(as_text=True), parent_runs()))
        return response

    serve._clisc_default_view = True  # type: ignore[attr-defined]
    flask_app.view_functions["serve"] = serve


def create_app() -> Any:
    """The server app uvicorn runs (a factory, as MLflow's ``basic-auth`` app is): MLflow's FastAPI
    app, whose Flask part (the UI and REST handlers) serves the patched ``index.html``."""
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import app

    patch_index(flask_app)
    return app


def app_registered() -> bool:
    """Whether this interpreter's MLflow can find the ``clisc`` app (the entry point is installed:
    ``pip install -e .`` / ``make venv`` after pyproject.toml declared it)."""
    from importlib.metadata import entry_points

    return any(ep.name == APP_NAME for ep in entry_points(group="mlflow.app"))
