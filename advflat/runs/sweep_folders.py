"""Where the jobs of a multirun write: one folder per job, named after its overrides.

``hydra.sweep.subdir`` is ``${advflat.job_folder:${hydra:job.override_dirname}}``: the job's
overrides, sorted, experiment preset included (``experiment=paper/at,seed=1`` →
``experiment=paper_at,seed=1``), so a sweep over presets puts every preset in its own folder.
The name is a pure function of the overrides, so the same command finds the same folders and
skips the runs that finished. File systems allow 255 bytes per name: a longer one keeps its
first ``MAX_NAME - 9`` characters and ends in ``-`` and 8 hex digits of a hash of the whole.
"""

from __future__ import annotations

import hashlib
import re

from omegaconf import OmegaConf

RESOLVER = "advflat.job_folder"
# Anything but letters, digits and ``. _ = , + -`` becomes ``_``: a ``/`` in a preset name
# (paper/at) must not nest folders, and brackets or quotes of list values make awkward paths.
UNSAFE = re.compile(r"[^\w.=,+\-]")
MAX_NAME = 200  # characters; below the 255-byte limit even with a few multi-byte ones


def job_folder(override_dirname: str) -> str:
    """The folder name of a job with these overrides (Hydra's ``override_dirname``)."""
    name = UNSAFE.sub("_", override_dirname)
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(override_dirname.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME - 9]}-{digest}"


def register_resolver() -> None:
    """Make ``${advflat.job_folder:...}`` known; every process that runs jobs imports this."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, job_folder)


register_resolver()
