"""Downloads the wheels that scripts/gpu_check.sh installs on the CUDA check machine.

That machine (Python 3.12, torch + CUDA preinstalled, no network) already holds the
packages listed in scripts/gpu_preinstalled.txt. What kanserve needs beyond them is
worked out here from the installed metadata of the running interpreter (the project's
.venv): the runtime requirements of pyproject.toml (torch left out: the machine's own
build is used), followed through every dependency, with markers read for Python 3.12 on
Linux x86_64. Each such package is downloaded at the version installed here, the one the
test suite ran against.

Also downloaded, and installed there only if pip finds the preinstalled copy too old:
the small pure-Python packages that the image already has and that pyproject.toml or
those missing packages require (typing-extensions, anyio, click, httpx, ...).

Usage: .venv/bin/python scripts/gpu_wheels.py [DEST]   (default wheels/gpu; `make gpu-wheels`)
       .venv/bin/python scripts/gpu_wheels.py --check [DEST]
--check downloads nothing: it says whether DEST holds, at the versions installed here, a
wheel for every package that machine lacks, each one installable on CPython 3.12 Linux
x86_64 (scripts/gpu_check.sh's dry run).
"""
from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
PREINSTALLED = Path(__file__).with_name("gpu_preinstalled.txt")
TARGET_ENVIRONMENT = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
                      "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                      "implementation_name": "cpython", "platform_python_implementation": "CPython"}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
# A fallback copy larger than this is not brought along (the machine's tool carries 64 MiB in all).
FALLBACK_MAX_BYTES = 1 << 20


def applies(requirement: Requirement, extras: tuple[str, ...]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**TARGET_ENVIRONMENT, "extra": extra}) for extra in ("", *extras))


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [requirement for requirement in map(Requirement, project["dependencies"])
            if canonicalize_name(requirement.name) != "torch" and applies(requirement, ())]


def closure(requirements: list[Requirement]) -> dict[str, tuple[str, list[str]]]:
    """{name: (installed version, [names it requires])} for every package reached."""
    found: dict[str, tuple[str, list[str]]] = {}
    pending = [(requirement.name, tuple(requirement.extras)) for requirement in requirements]
    visited: set[tuple[str, tuple[str, ...]]] = set()
    while pending:
        name, extras = pending.pop()
        key = canonicalize_name(name)
        if (key, extras) in visited:
            continue
        visited.add((key, extras))
        distribution = metadata.distribution(name)
        needs = [Requirement(line) for line in distribution.requires or []]
        needs = [requirement for requirement in needs if applies(requirement, extras)]
        known = found.get(key, (distribution.version, []))[1]
        found[key] = (distribution.version, sorted({*known, *(canonicalize_name(r.name) for r in needs)}))
        pending += [(requirement.name, tuple(requirement.extras)) for requirement in needs]
    return found


def pure_python(name: str) -> bool:
    """Installed here from a py3-none-any wheel (so that wheel installs anywhere)."""
    wheel = metadata.distribution(name).read_text("WHEEL") or ""
    return any(line.startswith("Tag:") and line.endswith("-none-any") for line in wheel.splitlines())


def preinstalled() -> set[str]:
    return {canonicalize_name(line.strip()) for line in PREINSTALLED.read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def download(pins: list[str], dest: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "-qq", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run(command + pins, check=True)


def check(dest: Path, packages: dict[str, tuple[str, list[str]]], missing: list[str]) -> int:
    supported = {*cpython_tags((3, 12), platforms=PLATFORMS), *compatible_tags((3, 12), "cp312", PLATFORMS)}
    offered, problems = {}, []
    for wheel in sorted(dest.glob("*.whl")):
        name, version, _, tags = parse_wheel_filename(wheel.name)
        if name in offered:
            problems.append(f"two wheels of {name}")
        offered[name] = str(version)
        if not tags & supported:
            problems.append(f"{wheel.name} does not install on CPython 3.12 Linux x86_64")
    for name in missing:
        if name not in offered:
            problems.append(f"no wheel of {name} (that machine lacks it)")
        elif offered[name] != packages[name][0]:
            problems.append(f"{name} {offered[name]} offered, {packages[name][0]} installed here")
    size = sum(wheel.stat().st_size for wheel in dest.glob("*.whl"))
    print(f"{dest}: {len(offered)} wheels, {size / 2 ** 20:.1f} MiB; {len(missing)} packages that machine lacks")
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


def main() -> int:
    arguments = sys.argv[1:]
    checking = "--check" in arguments
    arguments = [argument for argument in arguments if argument != "--check"]
    dest = Path(arguments[0]) if arguments else ROOT / "wheels" / "gpu"
    requirements = runtime_requirements()
    top_level = [requirement.name for requirement in requirements]
    packages = closure(requirements)
    present = preinstalled()
    missing = sorted(name for name in packages if name not in present)
    if checking:
        return check(dest, packages, missing)
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob("*.whl"):  # one version of each package: two would stop pip there
        stale.unlink()
    wanted = {need for name in missing for need in packages[name][1]} | set(map(canonicalize_name, top_level))
    fallbacks = sorted(name for name in wanted & present if pure_python(name))
    download([f"{name}=={packages[name][0]}" for name in missing], dest)
    fallback_dir = dest / "fallback"
    fallback_dir.mkdir(exist_ok=True)
    download([f"{name}=={packages[name][0]}" for name in fallbacks], fallback_dir)
    kept = []
    for wheel in sorted(fallback_dir.glob("*.whl")):
        if wheel.name.endswith("-none-any.whl") and wheel.stat().st_size <= FALLBACK_MAX_BYTES:
            wheel.rename(dest / wheel.name)
            kept.append(wheel.name.split("-")[0])
        else:
            wheel.unlink()
    fallback_dir.rmdir()
    wheels = sorted(dest.glob("*.whl"))
    total = sum(wheel.stat().st_size for wheel in wheels)
    print(f"{len(wheels)} wheels in {dest}, {total / 2 ** 20:.1f} MiB: missing there: {', '.join(missing)}; "
          f"fallback copies: {', '.join(kept)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
