"""absl-flag entry points: train (and the lead's demo) plus their config files."""
