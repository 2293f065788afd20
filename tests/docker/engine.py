"""A Docker engine for ``make docker-test`` on machines that have none, and the images it needs.

:func:`docker_engine` installs Debian's ``docker.io``, ``docker-compose`` (1.29, the Python one)
and ``debootstrap`` with apt-get where this is root and they are missing, starts ``dockerd`` when
no daemon answers, and stops it at the end. dockerd leaves iptables chains, its ``docker0``
bridge and ``net.ipv4.ip_forward=1`` behind when it stops: the state before it started is taken
first and put back after (``iptables-save`` / ``iptables-restore``, tables it created flushed,
bridges it created deleted, the forwarding flag restored). A daemon that was already running is
left alone, and so is its state.

:func:`base_image` makes ``debian:bookworm-slim`` available when no registry can be reached:
``debootstrap --variant=minbase bookworm`` then ``docker import``. :func:`local_service_images`
builds stand-ins for the official ``postgres`` and ``redis`` images the same way
(``docker/local/``), for the compose file's ``POSTGRES_IMAGE`` and ``REDIS_IMAGE``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DOCKER_DIR = Path(__file__).resolve().parents[2] / "docker"
TOOLS = {
    "dockerd": "docker.io",
    "docker-compose": "docker-compose",
    "debootstrap": "debootstrap",
    "iptables": "iptables",
    "nft": "nftables",
}
BASE_IMAGE = "debian:bookworm-slim"
LOCAL_IMAGES = {"postgres": "ecoval-local/postgres:15", "redis": "ecoval-local/redis:7"}
MIRROR = "http://deb.debian.org/debian"


def run(argv: list[str], timeout: float = 600, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure, raise with the tail of what it printed."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def missing_tools() -> str | None:
    """Install the engine, compose and debootstrap where missing and this is root on Debian; else say why not."""
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        install = f"apt-get install {' '.join(missing)}"
        return f"{', '.join(missing)} not installed and this is not root on Debian ({install})"
    for update in (False, True):
        if update:
            run(["apt-get", "update", "-q"], check=False)
        done = run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=False)
        if done.returncode == 0:
            return None
    return f"apt-get install {' '.join(missing)} failed: {done.stderr[-500:]}"


def daemon_answers() -> bool:
    return run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False, timeout=30).returncode == 0


def _links() -> set[str]:
    return {name for name in os.listdir("/sys/class/net")}


def _iptables_save() -> str:
    return run(["iptables-save"], check=False).stdout if shutil.which("iptables-save") else ""


def _tables(saved: str) -> set[str]:
    """The tables an ``iptables-save`` dump holds (nf_tables has no ``/proc/net/ip_tables_names``)."""
    return {line[1:].strip() for line in saved.splitlines() if line.startswith("*")}


def _uplink_mtu() -> int:
    """The MTU of the default route's interface: containers must not send bigger packets than it carries."""
    route = run(["ip", "-o", "route", "show", "default"], check=False).stdout.split()
    device = route[route.index("dev") + 1] if "dev" in route else "eth0"
    mtu = Path(f"/sys/class/net/{device}/mtu")
    return int(mtu.read_text()) if mtu.exists() else 1500


@contextmanager
def docker_engine(home: Path) -> Iterator[None]:
    """A Docker daemon for the block: the running one, or one started here and cleaned up after."""
    if daemon_answers():
        yield
        return
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    forward_before = forward.read_text().strip()
    links_before = _links()
    saved = _iptables_save()
    log = (home / "dockerd.log").open("ab")
    # --mtu: the default bridge (builds) would use 1500 over a smaller uplink, and big replies from
    # PyPI stall.
    dockerd = subprocess.Popen(
        ["dockerd", "--mtu", str(_uplink_mtu()), "--pidfile", str(home / "dockerd.pid")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not daemon_answers():
            if dockerd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start:\n{(home / 'dockerd.log').read_text()[-3000:]}")
            time.sleep(1)
        yield
    finally:
        dockerd.terminate()
        try:
            dockerd.wait(timeout=60)
        except subprocess.TimeoutExpired:
            dockerd.kill()
            dockerd.wait(timeout=30)
        log.close()
        _restore_network(saved, links_before, forward_before)


def _restore_network(saved: str, links_before: set[str], forward_before: str) -> None:
    """Put back the packet filter, links and forwarding flag as they were before dockerd started."""
    if saved.strip():
        run(["iptables-restore"], input=saved)
    created = _tables(_iptables_save()) - _tables(saved)
    if created:
        # Tables dockerd created go back to empty: built-in chains accepting (it sets FORWARD to
        # DROP), its own chains gone; nft then drops the empty tables where it is installed.
        run(["iptables-restore"], input=_empty_tables(_iptables_save(), created))
        for table in created:
            if shutil.which("nft"):
                run(["nft", "delete", "table", "ip", table], check=False)
    for link in _links() - links_before:
        run(["ip", "link", "delete", link], check=False)
    Path("/proc/sys/net/ipv4/ip_forward").write_text(forward_before)


def _empty_tables(saved: str, tables: set[str]) -> str:
    """An ``iptables-restore`` input that leaves ``tables`` with their built-in chains only, accepting."""
    lines, table = [], None
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            if table in tables:
                lines.append(line)
        elif table in tables and line.startswith(":") and line.split()[1] != "-":
            lines.append(f"{line.split()[0]} ACCEPT [0:0]")
        elif table in tables and line == "COMMIT":
            lines.append(line)
    return "\n".join(lines) + "\n"


def image_exists(name: str) -> bool:
    return run(["docker", "image", "inspect", name], check=False).returncode == 0


def pulled(name: str) -> bool:
    """Whether ``name`` is here or could be pulled (a registry out of reach may hang instead of refusing)."""
    try:
        return image_exists(name) or run(["docker", "pull", name], check=False, timeout=90).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def base_image(home: Path) -> str:
    """``debian:bookworm-slim``: present, pulled, or made here with debootstrap when no registry answers."""
    if pulled(BASE_IMAGE):
        return BASE_IMAGE
    root = Path(tempfile.mkdtemp(prefix="bookworm-", dir=home))
    try:
        run(["debootstrap", "--variant=minbase", "bookworm", str(root), MIRROR], timeout=1200)
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        (root / "var/cache/apt/archives/partial").mkdir(parents=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        run(["docker", "import", "-", BASE_IMAGE], stdin=tar.stdout, timeout=600)
        tar.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return BASE_IMAGE


def local_service_images(base: str) -> dict[str, str]:
    """``POSTGRES_IMAGE`` and ``REDIS_IMAGE`` for the compose file: the official images where they can
    be pulled, else stand-ins built from ``docker/local/`` on the bookworm base."""
    images = {}
    for name, official in (("postgres", "postgres:16"), ("redis", "redis:7")):
        if pulled(official):
            images[name] = official
            continue
        tag = LOCAL_IMAGES[name]
        run(["docker", "build", "-t", tag, "--build-arg", f"BASE_IMAGE={base}", str(DOCKER_DIR / "local" / name)],
            timeout=1200)  # fmt: skip
        images[name] = tag
    return {"POSTGRES_IMAGE": images["postgres"], "REDIS_IMAGE": images["redis"]}
