"""Where the commands find advflat's Hydra config: inside the installed package, so an editable
checkout and a wheel installed from anywhere behave the same."""

from __future__ import annotations

from pathlib import Path

# An absolute path: Hydra resolves relative config paths against the caller's file, and a
# wheel's package directory is wherever pip put it.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
CONFIG_NAME = "config"
