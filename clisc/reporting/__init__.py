"""Tables and figures of the paper rebuilt from the runs tracked in MLflow."""
