"""What the wheel ships: the whole Hydra config, the commands, honest dependency ranges, and none
of the checkout's tests, benchmarks or scripts. (scripts/check_wheel.sh also installs and runs
it from outside the checkout; that takes a minute and runs in CI and `make check-wheel`.)"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator

import pytest

from scripts.build_wheel import REPO, build_wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    with zipfile.ZipFile(build_wheel(tmp_path_factory.mktemp("dist"))) as built:
        yield built


def metadata(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


def test_the_wheel_ships_every_config_file(wheel: zipfile.ZipFile) -> None:
    expected = {p.relative_to(REPO).as_posix() for p in (REPO / "advflat/conf").rglob("*.yaml")}
    assert "advflat/conf/config.yaml" in expected and len(expected) > 20
    assert expected <= set(wheel.namelist()), sorted(expected - set(wheel.namelist()))


def test_the_wheel_ships_only_the_package(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert tops == {"advflat", "advflat-0.1.0.dist-info"}, tops


def test_the_wheel_installs_the_four_commands(wheel: zipfile.ZipFile) -> None:
    scripts = metadata(wheel, "entry_points.txt")
    for command in ["advflat = advflat.cli.train:main", "advflat-eval = advflat.cli.evaluate:main",
                    "advflat-report = advflat.cli.report:main",
                    "advflat-convert = advflat.data.convert:main"]:  # fmt: skip
        assert command in scripts


def test_no_dependency_is_pinned_to_one_version(wheel: zipfile.ZipFile) -> None:
    # An exact torch pin would replace a user's own CUDA/ROCm/cluster build on install;
    # the tested versions live in constraints.txt instead.
    requires = [
        line for line in metadata(wheel, "METADATA").splitlines() if "Requires-Dist" in line
    ]
    assert any(line.startswith("Requires-Dist: torch>=") for line in requires), requires
    assert not [line for line in requires if "==" in line.split(";")[0]]  # ';' starts markers


def test_the_constraints_pin_every_declared_dependency() -> None:
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    for name in ["torch", "torchvision", "hydra-core", "omegaconf", "submitit", "mypy", "ruff"]:
        assert name in pinned, name
