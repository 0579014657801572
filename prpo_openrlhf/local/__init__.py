"""Single-machine trainer: the embedded default for a first run, CI and small experiments."""
