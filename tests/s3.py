"""A real S3 API server for the tests: s3proxy 4.1.0 on a loopback port, buckets as folders.

The jar (``org.gaul:s3proxy:4.1.0:jar:jar-with-dependencies``, 55 MB) is fetched once from Maven
Central into ``~/.cache/ecoval/s3proxy/`` and checked against Central's SHA-1; ``ECOVAL_S3PROXY_JAR``
names a copy instead. 4.x, not 3.x: its conditional puts on the filesystem store are atomic,
which delta-rs's commits rely on.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

VERSION = "4.1.0"
JAR = f"s3proxy-{VERSION}-jar-with-dependencies.jar"
URL = f"https://repo1.maven.org/maven2/org/gaul/s3proxy/{VERSION}/{JAR}"
KEY = "ecoval-test"
SECRET = "s3-secret-Zq7x9P"  # grepped for: it must never reach MLflow, logs or XCom


@dataclass(frozen=True)
class S3Server:
    """A running s3proxy.

    Attributes:
        endpoint: its URL.
        root: the folder whose subfolders are its buckets.
    """

    endpoint: str
    root: Path

    def bucket(self, name: str) -> str:
        """Create the bucket ``name`` (empty); its ``s3://`` URI."""
        shutil.rmtree(self.root / name, ignore_errors=True)
        (self.root / name).mkdir()
        return f"s3://{name}"

    def env(self, *, secret: str = SECRET) -> dict[str, str]:
        """The standard AWS variables that reach it."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": "us-east-1",
        }


def s3proxy_jar() -> Path | None:
    """The jar, fetched and checked on first use; None where it cannot be fetched."""
    if given := os.environ.get("ECOVAL_S3PROXY_JAR"):
        return Path(given)
    jar = Path.home() / ".cache" / "ecoval" / "s3proxy" / JAR
    if jar.exists():
        return jar
    jar.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(URL + ".sha1", timeout=60) as r:
            expected = r.read().decode().split()[0]
        # A part of its own per process: two pytest-xdist workers may fetch it at once.
        tmp = jar.with_suffix(f".{os.getpid()}.part")
        with urllib.request.urlopen(URL, timeout=300) as r, tmp.open("wb") as out:
            shutil.copyfileobj(r, out)
    except OSError:
        return None
    if hashlib.sha1(tmp.read_bytes()).hexdigest() != expected:
        tmp.unlink()
        return None
    tmp.replace(jar)
    return jar


def missing() -> str | None:
    """Why s3proxy cannot run here, or None."""
    if shutil.which("java") is None:
        return "java is not installed: s3proxy (the tests' S3 server) needs Java 17"
    if s3proxy_jar() is None:
        return f"s3proxy's jar could not be fetched from {URL}"
    return None


def s3proxy_argv(home: Path, port: int) -> tuple[list[str], S3Server]:
    """The command that starts s3proxy on ``port`` with its buckets under ``home``, and the server it gives."""
    root = home / "buckets"
    root.mkdir(parents=True)
    server = S3Server(f"http://127.0.0.1:{port}", root)
    properties = home / "s3proxy.properties"
    properties.write_text(
        "s3proxy.authorization=aws-v2-or-v4\n"
        f"s3proxy.identity={KEY}\ns3proxy.credential={SECRET}\ns3proxy.endpoint={server.endpoint}\n"
        f"jclouds.provider=filesystem-nio2\njclouds.filesystem.basedir={root}\n"
    )
    return ["java", "-Xmx256m", "-jar", str(s3proxy_jar()), "--properties", str(properties)], server


def answers(server: S3Server) -> bool:
    """Whether s3proxy answers (403 to an unsigned request)."""
    try:
        urllib.request.urlopen(server.endpoint, timeout=2)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


@contextmanager
def running_s3(home: Path) -> Iterator[S3Server]:
    """Start s3proxy with a filesystem store under ``home``; stop it when the block ends."""
    from tests.stack.services import free_port  # the stack imports this module

    argv, server = s3proxy_argv(home, free_port())
    log = home / "s3proxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not answers(server):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"s3proxy did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
