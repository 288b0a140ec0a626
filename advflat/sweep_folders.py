"""Where the jobs of a multirun write: one folder per job, named after its overrides.

``hydra.sweep.subdir`` is ``${advflat.job_folder:${hydra:job.override_dirname}}``: the job's
overrides, sorted, experiment preset included (``experiment=paper/at,seed=1`` →
``experiment=paper_at,seed=1``), so a sweep over presets puts every preset in its own folder.
The name is a pure function of the overrides, so the same command finds the same folders and
skips the runs that finished.
"""

from __future__ import annotations

import re

from omegaconf import OmegaConf

RESOLVER = "advflat.job_folder"
# Anything but letters, digits and ``. _ = , + -`` becomes ``_``: a ``/`` in a preset name
# (paper/at) must not nest folders, and brackets or quotes of list values make awkward paths.
UNSAFE = re.compile(r"[^\w.=,+\-]")


def job_folder(override_dirname: str) -> str:
    """The folder name of a job with these overrides (Hydra's ``override_dirname``)."""
    return UNSAFE.sub("_", override_dirname)


def register_resolver() -> None:
    """Make ``${advflat.job_folder:...}`` known; every process that runs jobs imports this."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, job_folder)


register_resolver()
