"""Experiment configs: plain dicts whose keys are experiments/train.py flag names."""
