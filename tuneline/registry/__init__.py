"""Which version is in production, and the MLflow mirror of every run."""
