"""A writer killed with SIGKILL mid-write leaves no partial checkpoint or metrics file behind.

A helper process imports torch once and then forks writers that rewrite a checkpoint (8 MB, so
most of a writer's time is spent inside a write) and a metrics file through advflat.core.io in a
loop;
the test kills each writer with SIGKILL at a random moment and loads every file it left. How
often a kill lands inside a write depends on the machine's disk, so the test goes on killing
(up to MAX_KILLS) until MID_WRITE_KILLS kills have provably landed mid-write.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

KILLS = 8  # kills whose files are checked, at least
MAX_KILLS = 60  # more kills are made until some land mid-write (their .tmp file is left)
MID_WRITE_KILLS = 2
FORK_SERVER = textwrap.dedent(
    """\
    import os, signal, sys
    import torch
    from advflat.core.io import save_json, save_torch

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed writers are reaped automatically


    def write_forever(folder):
        epoch = 0
        while True:
            epoch += 1
            # Every value inside a file equals its epoch: a torn file cannot pass the checks.
            save_torch(f"{folder}/last.pt", {"epoch": epoch, "w": torch.full((2_000_000,), epoch)})
            save_json(f"{folder}/metrics.json", {"epoch": epoch, "values": [epoch] * 50_000})


    for line in sys.stdin:  # one folder per line: fork a writer into it, answer its pid
        pid = os.fork()
        if pid == 0:
            write_forever(line.strip())
        print(pid, flush=True)
    """
)


def wait_for(paths: list[Path], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"the writer never wrote {paths}"
        time.sleep(0.01)


def kill_and_wait(pid: int, timeout_s: float = 10) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists():  # gone once the fork server has reaped it
        assert time.monotonic() < deadline, f"writer {pid} survived SIGKILL"
        time.sleep(0.005)


def check_complete(folder: Path) -> None:
    """Every file under its final name loads, and holds one epoch's values throughout."""
    state = torch.load(folder / "last.pt", weights_only=True)
    assert bool((state["w"] == state["epoch"]).all()) and state["w"].numel() == 2_000_000
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["values"] == [metrics["epoch"]] * 50_000


def test_sigkill_mid_write_never_leaves_a_partial_file_under_the_final_name(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, "-c", FORK_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    rng = random.Random(0)
    leftovers, writers = 0, []
    try:
        for kill in range(MAX_KILLS):
            if kill >= KILLS and leftovers >= MID_WRITE_KILLS:
                break
            folder = tmp_path / f"run{kill}"
            folder.mkdir()
            server.stdin.write(f"{folder}\n")
            server.stdin.flush()
            writers.append(int(server.stdout.readline()))
            wait_for([folder / "last.pt", folder / "metrics.json"])
            time.sleep(rng.uniform(0.0, 0.3))
            kill_and_wait(writers[-1])
            assert {p.name for p in folder.iterdir() if not p.name.startswith(".")} == {
                "last.pt",
                "metrics.json",
            }
            check_complete(folder)
            leftovers += sum(p.name.endswith(".tmp") for p in folder.iterdir())
    finally:
        for pid in writers:  # a failed check must not leave a writer running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.kill()
        server.communicate()  # reaps it and closes its pipes
    # Killed writers leave their hidden temporary files: proof the kills landed mid-write.
    assert leftovers >= MID_WRITE_KILLS, f"only {leftovers} of {MAX_KILLS} kills landed mid-write"
