"""The Docker engine, Compose, and the local images the compose test builds on.

The compose test must run where no image registry answers, so nothing it uses is pulled:

- the base image of the broker's image, a Debian bookworm with Python, and a Redis image, are
  made here with ``debootstrap`` from the Debian mirror apt already uses, then
  ``docker import``-ed. Each is cached by its tag: the tag names the recipe's version, so a
  second run (and a fresh clone on the same engine) reuses it, and a changed recipe gets a new
  tag instead of a stale image;
- the broker's dependencies come as wheels downloaded on the host for the base image's Python
  and platform (the wheelhouse), so the image builds with ``pip --no-index``, as a reproducible
  production image is built.

Every function answers with a reason when the machine cannot do its part, for the test to skip
with; nothing here raises for a missing engine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
# Bump a recipe's version when its packages or changes change: the tag is the cache key.
BASE_IMAGE = "broker-e2e/debian-python:bookworm-1"
REDIS_IMAGE = "broker-e2e/debian-redis:bookworm-1"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
REDIS_PACKAGES = ("redis-server",)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Where the compose test's wheels go: inside the build context (the repository), ignored by git.
WHEELHOUSE = REPO_ROOT / "build" / "wheelhouse-e2e"
_LOCKS = Path(tempfile.gettempdir())
# What makes a tree from debootstrap smaller without touching what runs: package caches and
# lists, documentation, translations.
_STRIP = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)


class Unavailable(Exception):
    """The machine cannot do this part; the message says why, for a skip."""


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``docker ARGS``; with ``check``, a failure raises with what docker said."""
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        said = (result.stderr or result.stdout).strip()[-2000:]
        raise RuntimeError(f"docker {' '.join(args)} failed (exit {result.returncode}):\n{said}")
    return result


def engine_problem() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    try:
        result = docker("info", "--format", "{{.ServerVersion}}", timeout=15, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 15 s"
    if result.returncode != 0 or not result.stdout.strip():
        detail = (result.stderr or result.stdout).strip().splitlines()
        return "no Docker engine answers: " + (detail[-1] if detail else "`docker info` failed")
    return None


def compose_command() -> list[str] | None:
    """The Compose command: the ``docker compose`` plugin, else the standalone
    ``docker-compose`` (Debian's package), else None."""
    candidates = (["docker", "compose"], ["docker-compose"])
    for command in candidates:
        if shutil.which(command[0]) is None:
            continue
        try:
            result = subprocess.run(
                [*command, "version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0:
            return command
    return None


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False, timeout=30).returncode == 0


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """One builder at a time per machine: two test runs share the engine and the cache."""
    with open(_LOCKS / f"broker-e2e-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt uses for ``SUITE``: from the deb822 ``*.sources`` files or
    ``sources.list``; the public mirror when apt names none."""
    candidates: list[tuple[str, list[str]]] = []
    for path in sorted((sources / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ", "\t")):
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    candidates.append((uri, fields.get("suites", "").split()))
    lists = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = re.sub(r"\[[^\]]*\]", "", line).split()  # drop [signed-by=...] options
            if len(words) >= 3 and words[0] == "deb":
                candidates.append((words[1], [words[2]]))
    for uri, suites in candidates:
        if SUITE in suites and uri.startswith("http"):
            return uri
    return DEFAULT_MIRROR


def _debootstrap(root: Path, packages: Sequence[str], mirror: str, log: Path) -> None:
    with open(log, "w") as output:
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=" + ",".join(packages)]
            + [SUITE, str(root), mirror],
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"debootstrap failed:\n{log.read_text()[-3000:]}")


def _import(root: Path, tag: str, changes: Sequence[str]) -> None:
    """``tar -C root -c . | docker import - tag``, with Dockerfile ``changes``."""
    for relative in _STRIP:
        target = root / relative
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir()
    # As Docker's own Debian images do: no package's maintainer script starts a service.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    args = ["docker", "import"]
    for change in changes:
        args += ["--change", change]
    try:
        subprocess.run(
            [*args, "-", tag], stdin=tar.stdout, check=True, timeout=600, capture_output=True
        )
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()


_PATH = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_RECIPES: dict[str, tuple[Sequence[str], Sequence[str]]] = {
    BASE_IMAGE: (BASE_PACKAGES, (_PATH, "ENV LANG=C.UTF-8", 'CMD ["python3"]')),
    REDIS_IMAGE: (
        REDIS_PACKAGES,
        (
            _PATH,
            "WORKDIR /data",
            "USER redis",
            "EXPOSE 6379",
            'CMD ["redis-server", "--protected-mode", "no", "--dir", "/data"]',
        ),
    ),
}


def ensure_local_images() -> tuple[str, str]:
    """The tags of the base image and the Redis image, built now unless the engine has them.

    Both are built side by side (two debootstraps, a minute or two together) into a scratch
    directory that is removed afterwards. Raises ``Unavailable`` where they cannot be built.
    """
    tags = (BASE_IMAGE, REDIS_IMAGE)
    with locked("images"):
        missing = [tag for tag in tags if not image_exists(tag)]
        if not missing:
            return tags
        if shutil.which("debootstrap") is None:
            raise Unavailable(
                f"images {', '.join(missing)} are missing and there is no debootstrap to build "
                "them (apt-get install debootstrap; .ci/run does)"
            )
        if os.geteuid() != 0:
            raise Unavailable(f"images {', '.join(missing)} are missing; debootstrap needs root")
        mirror = debian_mirror()
        scratch = Path(tempfile.mkdtemp(prefix="broker-e2e-rootfs-", dir="/var/tmp"))
        try:
            started = []
            for tag in missing:
                root = scratch / re.sub(r"\W", "_", tag)
                started.append((tag, root, scratch / (root.name + ".log")))
            # Side by side: each debootstrap mostly waits on the mirror and on dpkg.
            with ThreadPoolExecutor(len(started)) as pool:
                jobs = [
                    pool.submit(_debootstrap, root, _RECIPES[tag][0], mirror, log)
                    for tag, root, log in started
                ]
                for job in jobs:
                    job.result()
            for tag, root, _ in started:
                if tag == REDIS_IMAGE:
                    # The volume mounted at /data starts as a copy of this: owned by redis.
                    data = root / "data"
                    data.mkdir(exist_ok=True)
                    ids = _passwd_ids(root, "redis")
                    os.chown(data, *ids)
                _import(root, tag, _RECIPES[tag][1])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return tags


def _passwd_ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise RuntimeError(f"no user {user} in {root}/etc/passwd")


@dataclass(frozen=True)
class PythonTarget:
    """The interpreter an image runs: what its wheels must fit."""

    full_version: str  # "3.11.2"
    machine: str  # "x86_64", "aarch64"

    @property
    def abi(self) -> str:
        return "cp" + "".join(self.full_version.split(".")[:2])


def python_of(image: str) -> PythonTarget:
    """The Python version and machine of ``image`` (one short-lived container)."""
    script = "import platform; print(platform.python_version(), platform.machine())"
    output = docker("run", "--rm", "--network", "none", image, "python3", "-c", script).stdout
    full_version, machine = output.split()
    return PythonTarget(full_version, machine)


def wheelhouse(image: str, python: str) -> Path:
    """Wheels of the broker's dependencies for ``image``'s Python, and of its build backend,
    in ``WHEELHOUSE``: what the image's ``pip --no-index --find-links`` installs from.

    Downloaded with the host's pip (``python -m pip``) for the image's Python version and
    platform, whatever the host's own Python is. The host's pip judges environment markers by
    the host's interpreter (``python_full_version < "3.11.3"`` is false on a 3.11.7 host and
    true in bookworm's 3.11.2), so the image's own pip then checks the wheelhouse, offline, and
    whatever it misses is fetched until it misses nothing. Reused while ``pyproject.toml`` and
    the image stay the same.
    """
    target = python_of(image)
    image_id = docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
    recipe = (REPO_ROOT / "pyproject.toml").read_bytes() + repr(target).encode()
    stamp = hashlib.sha256(recipe + image_id.encode()).hexdigest()
    with locked("wheelhouse"):
        marker = WHEELHOUSE / ".stamp"
        if marker.is_file() and marker.read_text() == stamp:
            return WHEELHOUSE
        shutil.rmtree(WHEELHOUSE, ignore_errors=True)
        WHEELHOUSE.mkdir(parents=True)
        pip = [python, "-m", "pip", "--disable-pip-version-check", "--quiet"]
        with tempfile.TemporaryDirectory() as project:
            # The project's own wheel only to resolve its dependencies with; the image builds
            # the project from its source.
            subprocess.run(
                [*pip, "wheel", "--no-deps", "--wheel-dir", project, str(REPO_ROOT)],
                check=True,
                timeout=300,
                capture_output=True,
            )
            wanted = [str(next(Path(project).glob("*.whl"))), "setuptools>=68"]
            for _ in range(10):
                _download(pip, target, wanted)
                wanted = _missing(image, Path(project))
                if not wanted:
                    break
            else:
                raise RuntimeError(f"the wheelhouse for {image} still misses {wanted}")
        for own in WHEELHOUSE.glob("llm_stream_broker-*.whl"):
            own.unlink()
        marker.write_text(stamp)
    return WHEELHOUSE


def _download(pip: list[str], target: PythonTarget, requirements: list[str]) -> None:
    # Bookworm's glibc is 2.36: a wheel for it or any older glibc fits (pip does not widen a
    # given platform to older ones by itself).
    platforms = [f"manylinux_2_{minor}_{target.machine}" for minor in range(36, 16, -1)]
    platforms.append(f"manylinux2014_{target.machine}")
    tags = ["--python-version", target.full_version, "--implementation", "cp"]
    tags += ["--abi", target.abi, "--abi", "abi3", "--abi", "none"]
    for name in platforms:
        tags += ["--platform", name]
    result = subprocess.run(
        [*pip, "download", "--only-binary=:all:", *tags, "--dest", str(WHEELHOUSE)] + requirements,
        timeout=600,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pip download for {target} failed:\n{result.stderr[-3000:]}")


_NOT_FOUND = re.compile(r"No matching distribution found for ([^;\n]+)")


def _missing(image: str, project: Path) -> list[str]:
    """What the image's pip cannot find in the wheelhouse to install the project (no network:
    it sees nothing but the wheelhouse)."""
    script = (
        "python3 -m venv /tmp/venv && /tmp/venv/bin/pip --disable-pip-version-check install "
        "--dry-run --quiet --no-index --find-links /wheelhouse /project/*.whl 'setuptools>=68'"
    )
    result = docker(
        "run", "--rm", "--network", "none",
        "--volume", f"{WHEELHOUSE}:/wheelhouse:ro", "--volume", f"{project}:/project:ro",
        image, "sh", "-c", script,
        timeout=300, check=False,
    )  # fmt: skip
    if result.returncode == 0:
        return []
    missing = [match.strip() for match in _NOT_FOUND.findall(result.stderr)]
    if not missing:
        raise RuntimeError(f"pip in {image} failed:\n{result.stderr[-3000:]}")
    return missing
