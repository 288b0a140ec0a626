"""Where the evaluation of a checkpoint is written, one file per evaluation config.

``checkpoints/epoch_005.pt`` evaluated with an evaluation config whose short hash is ``1a2b3c4d``
writes ``checkpoints/epoch_005.eval-1a2b3c4d.json`` (metrics) and the folder
``checkpoints/epoch_005.eval-1a2b3c4d/`` (landscape data, AutoAttack progress). Re-evaluating
with another config therefore never overwrites nor blocks an earlier result, and a snapshot
already evaluated with the same config can be skipped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

HASH_LENGTH = 8


def evaluation_hash(evaluation_cfg: Any) -> str:
    """A short, stable hash of a (resolved) evaluation config: equal configs, equal hashes."""
    plain = evaluation_cfg
    if isinstance(evaluation_cfg, DictConfig):
        plain = OmegaConf.to_container(evaluation_cfg, resolve=True)
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def result_path(checkpoint: Path, evaluation_cfg: Any) -> Path:
    """The metrics file of ``checkpoint`` evaluated with ``evaluation_cfg``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.eval-{evaluation_hash(evaluation_cfg)}.json")


def files_dir(checkpoint: Path, evaluation_cfg: Any) -> Path:
    """The folder for the files that evaluation draws or keeps (landscapes, AutoAttack state)."""
    return result_path(checkpoint, evaluation_cfg).with_suffix("")


def is_evaluated(checkpoint: Path, evaluation_cfg: Any) -> bool:
    """Whether ``checkpoint`` already has its result for exactly this evaluation config."""
    return result_path(checkpoint, evaluation_cfg).is_file()


def result_files(checkpoint: Path) -> list[Path]:
    """Every evaluation written for ``checkpoint`` (any config), oldest first."""
    checkpoint = Path(checkpoint)
    found = checkpoint.parent.glob(f"{checkpoint.stem}.eval-*.json")
    return sorted(found, key=lambda path: (path.stat().st_mtime_ns, path.name))
