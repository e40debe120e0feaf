"""MLflow tracking of experiments (parent run) and their method x seed results (child runs)."""
from clisc.tracking.readback import latest_parent_run, load_experiment_results
from clisc.tracking.store import ExperimentRecorder, default_tracking_uri
from clisc.tracking.ui import ui_command

__all__ = [
    "ExperimentRecorder",
    "default_tracking_uri",
    "latest_parent_run",
    "load_experiment_results",
    "ui_command",
]
