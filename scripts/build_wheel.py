"""Build advflat's wheel from a clean copy of the checkout: ``python scripts/build_wheel.py OUT``.

The copy holds the files git tracks or would track (ignored ones left out), so neither a stale
``build/`` folder (setuptools never prunes it: a deleted module would ship) nor local outputs
reach the wheel. Built without build isolation: offline, with the environment's setuptools.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shipped_files(repo: Path) -> list[str]:
    """Paths (relative to ``repo``) of the files git tracks or would track, that exist."""
    listing = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return [name for name in listing.split("\0") if name and (repo / name).is_file()]


def build_wheel(out: Path, repo: Path = REPO) -> Path:
    """The path of advflat's wheel, built into ``out`` from a clean copy of ``repo``."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "src"
        for name in shipped_files(repo):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / name, source / name)
        command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps"]
        command += ["--no-build-isolation", "-w", str(out), str(source)]
        subprocess.run(command, check=True)
    (wheel,) = out.glob("advflat-*.whl")
    return wheel


if __name__ == "__main__":
    print(build_wheel(Path(sys.argv[1])))
