"""The ``clisc`` MLflow server app (``mlflow ui --app-name clisc``, the ``mlflow.app`` entry point in
pyproject.toml): MLflow's own server, whose UI opens in its model-training view in a fresh browser.

Why: MLflow 3's UI shows every experiment as GenAI (traces overview, assistant pane) until the user
picks "Model training" in its sidebar switch, whatever the experiment's ``mlflow.experimentKind`` tag
says; the choice lives only in the browser's ``localStorage`` (key ``mlflow.workflowType_v1``, default
GenAI; upstream mlflow/mlflow#24498) and MLflow has no server setting for it. This app serves MLflow's
``index.html`` with one script that sets that key to model training when the browser has no choice
yet, so Home -> Experiments -> an experiment lands on its runs table, and a later pick of the switch
is kept as MLflow keeps it. Everything else is MLflow's app unchanged.
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


def with_default_view(html: str) -> str:
    """``html`` (MLflow's index.html) with :data:`DEFAULT_VIEW_SCRIPT` first in its ``<head>``, so it
    runs before the UI's bundle reads the stored choice."""
    if DEFAULT_VIEW_SCRIPT in html:
        return html
    at = html.find("<head>")
    return (html[: at + 6] + DEFAULT_VIEW_SCRIPT + html[at + 6:]) if at >= 0 else DEFAULT_VIEW_SCRIPT + html


def patch_index(flask_app: Any) -> None:
    """Wrap the Flask view that serves ``index.html`` (endpoint ``serve``) with :func:`with_default_view`."""
    original = flask_app.view_functions["serve"]
    if getattr(original, "_clisc_default_view", False):
        return

    def serve() -> Any:
        response = flask_app.make_response(original())
        if response.mimetype == "text/html":
            response.direct_passthrough = False
            response.set_data(with_default_view(response.get_data(as_text=True)))
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
