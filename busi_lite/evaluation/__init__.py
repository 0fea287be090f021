"""Evaluation: metrics with intervals, flag evidence, labelled external folders, site calibration."""
