#!/usr/bin/env bash
# Does advflat work installed from its wheel, away from the checkout? (make check-wheel, CI)
#
# 1. builds the wheel from a clean copy of the checkout (scripts/build_wheel.py says why);
# 2. installs it, --no-deps --no-index, into a FRESH virtual environment whose only other
#    packages are .venv's, reached through one .pth line. A path line in a .pth file only
#    appends that directory to sys.path: .venv's own .pth files (the editable advflat finder)
#    are not run, and the fresh site-packages comes first, so `import advflat` finds the wheel's
#    copy while torch & co. are shared (no second multi-GB download). --ignore-installed keeps
#    pip from touching .venv's editable advflat, which it can see through that line;
# 3. from an empty folder outside the checkout: checks that advflat was imported from the wheel,
#    that the declared dependency ranges hold (pip check), then `advflat --cfg job` and a 1-epoch
#    quickstart (digits: offline; no lr milestones: they would lie past epoch 1) with
#    the quick evaluation.
# Usage: bash scripts/check_wheel.sh [WORKDIR]   (default: a new temporary folder, removed after)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv_python="$repo/.venv/bin/python"
work="${1:-$(mktemp -d)}"
[[ $# -ge 1 ]] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work/run"

echo "== building the wheel"
wheel="$("$venv_python" "$repo/scripts/build_wheel.py" "$work/dist")"
echo "$wheel"

echo "== installing it into a fresh environment ($work/venv) that reuses .venv's packages"
"$venv_python" -m venv --without-pip "$work/venv"
shared="$("$venv_python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
fresh="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
echo "$shared" > "$fresh/_advflat_shared_packages.pth"
"$venv_python" -m pip --python "$work/venv/bin/python" install -q --no-deps --no-index \
    --ignore-installed "$wheel"

cd "$work/run"  # outside the checkout: nothing may be found relative to it
unset PYTHONPATH
"$work/venv/bin/python" - "$fresh" <<'EOF'
import sys
from pathlib import Path

import advflat
from advflat.cli.paths import CONFIG_DIR

fresh = Path(sys.argv[1]).resolve()
where = Path(advflat.__file__).resolve()
assert where.is_relative_to(fresh), f"advflat imported from {where}, not from the wheel"
yamls = sorted(CONFIG_DIR.rglob("*.yaml"))
assert (CONFIG_DIR / "config.yaml").is_file() and yamls, f"no config under {CONFIG_DIR}"
print(f"advflat from {where.parent}, {len(yamls)} config files")
EOF
"$venv_python" -m pip --python "$work/venv/bin/python" check

echo "== advflat --cfg job"
"$work/venv/bin/advflat" --cfg job > cfg_job.yaml
head -n 5 cfg_job.yaml
echo "== a 1-epoch quickstart"
"$work/venv/bin/advflat" experiment=quickstart trainer.epochs=1 'trainer.scheduler.milestones=[]' \
    evaluation=quick
echo "== the wheel works outside the checkout"
