"""Scoring models on the test split: metrics, calibration, the prompted baseline, reports, review."""
