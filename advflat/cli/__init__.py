"""The three commands: ``advflat`` (train.py), ``advflat-eval`` (evaluate.py), ``advflat-report``
(report.py). Each is a ``main`` function named in pyproject.toml's ``[project.scripts]``."""
