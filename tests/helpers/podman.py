"""A podman engine for the real-build tests: installed from Debian, configured for this kind of VM, with
stand-in base images tagged under the exact names the generated Dockerfile uses (no registry is reachable).

Everything lives in a cache folder outside the repository (ML_TEMPLATE_CACHE, default ~/.cache/ml-template),
so a second run on the same machine reuses the stand-ins and the build layers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from helpers.tools import debian_packages

CACHE = Path(os.environ.get("ML_TEMPLATE_CACHE", Path.home() / ".cache" / "ml-template")) / "podman"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_PACKAGES = [
    "podman",
    "buildah",
    "runc",
    "catatonit",  # the init process of compose's `init: true`
    "netavark",
    "aardvark-dns",
    "slirp4netns",
    "iptables",
    "fuse-overlayfs",
    "uidmap",
    "mmdebstrap",
]
# The Debian suites of this machine's apt sources: the stand-in Python is Debian bookworm's CPython 3.11.
DEBIAN_SUITES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
STANDIN_PYTHON = "3.11"


def install_engine() -> None:
    """podman, podman's helpers and mmdebstrap from Debian, when they are missing (needs root, as in CI)."""
    debian_packages(DEBIAN_PACKAGES, "podman", "mmdebstrap", "/usr/libexec/podman/catatonit")


def engine_env() -> dict[str, str]:
    """The environment podman runs with: this VM's two required settings and the store in the cache folder."""
    CACHE.mkdir(parents=True, exist_ok=True)
    containers_conf = CACHE / "containers.conf"
    containers_conf.write_text(
        "[containers]\n"
        # podman's default nofile limit (1048576) needs CAP_SYS_RESOURCE, which this VM does not grant.
        'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        "[engine]\n"
        # crun 1.8 refuses cgroups v1 hybrid mode; runc works.
        'runtime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
    )
    storage_conf = CACHE / "storage.conf"
    storage_conf.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{CACHE / "store"}"\nrunroot = "{CACHE / "run"}"\n'
    )
    return {**os.environ, "CONTAINERS_CONF": str(containers_conf), "CONTAINERS_STORAGE_CONF": str(storage_conf)}


@contextlib.contextmanager
def store_lock(exclusive: bool = False) -> Iterator[bool]:
    """Builds share the store (waiting for a prune); a prune needs it alone and is skipped, not waited for, while a
    build runs. The suite's two worker processes build at once, and a prune deletes untagged images, a running
    build's finished stages among them. Yields whether the lock was taken."""
    with (CACHE / "store.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        except BlockingIOError:
            yield False
            return
        yield True


class Podman:
    def __init__(self) -> None:
        install_engine()
        self.env = engine_env()
        # Images an earlier run built under the same tags are dangling now: drop them, so the cache holds one
        # set of images (about 25 GB) however many runs reuse it.
        self.prune()

    def __call__(self, *args: str, check: bool = True, timeout: int = 1200, **kwargs: object):
        result = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout, **kwargs
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
        return result

    def has_image(self, name: str, recipe: str = "") -> bool:
        """`name` exists (and, for a stand-in, was made by this `recipe`: a changed recipe rebuilds it)."""
        label = '{{ index .Labels "ml-template.standin" }}'
        found = self("image", "inspect", "--format", label, name, check=False)
        return found.returncode == 0 and (not recipe or found.stdout.strip() == _digest(recipe))

    def build_args(self) -> list[str]:
        """No registry (stand-ins only); the host network and CA bundle reach PyPI through this machine's proxy."""
        return ["--pull=never", "--network=host", "-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]

    def remove(self, image: str) -> None:
        """Drop `image` and the build layers only it used (a test machine's disk holds a few images, not all)."""
        self("rmi", "-f", image, check=False)
        self.prune()

    def prune(self) -> None:
        """Drop dangling images, unless the other worker is building: then a later prune takes them."""
        with store_lock(exclusive=True) as locked:
            if locked:
                self("image", "prune", "-f", check=False)

    def build(self, context: Path, tag: str, *args: str, timeout: int = 1500) -> None:
        with store_lock():
            self("build", *self.build_args(), *args, "-t", tag, str(context), timeout=timeout)


def _digest(recipe: str) -> str:
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


# The stand-ins' environment. This machine reaches PyPI through a TLS-inspecting proxy whose CA is only in the
# host's bundle (mounted over the image's at build time): uv and Poetry (requests) read their own CA roots unless
# these point at the system bundle. Real base images do not need them; the Dockerfile stays unchanged.
STANDIN_ENV = (
    "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
    f"SSL_CERT_FILE={CA_BUNDLE}",
    f"REQUESTS_CA_BUNDLE={CA_BUNDLE}",
)


def standin_python(podman: Podman, image: str) -> None:
    """`python:<release>-slim-bookworm`: Debian bookworm with its CPython 3.11 (3.11.2, not <release>) as python."""
    recipe = " ".join([*DEBIAN_SUITES, *STANDIN_ENV])
    if podman.has_image(image, recipe):
        return
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        rootfs = Path(work) / "rootfs.tar"
        hooks = [
            "--customize-hook=chroot $1 sh -c 'for n in python python3 python3.11 pip pip3; do "
            "ln -sf /usr/bin/$(echo $n | sed s/^python$/python3/\\;s/^pip$/pip3/) /usr/local/bin/$n; done'",
            "--customize-hook=rm -f $1/usr/lib/python3*/EXTERNALLY-MANAGED",
        ]
        subprocess.run(
            ["mmdebstrap", "--variant=minbase", "--mode=root", "--quiet",
             "--include=ca-certificates,netbase,tzdata,passwd,python3,python3-venv,python3-pip",
             *hooks, "bookworm", str(rootfs), *DEBIAN_SUITES],
            check=True, timeout=900,
        )  # fmt: skip
        changes = [f"ENV {variable}" for variable in STANDIN_ENV]
        changes += ['CMD ["python3"]', f"LABEL ml-template.standin={_digest(recipe)}"]
        podman("import", *(f"--change={change}" for change in changes), str(rootfs), image)


def standin_uv(podman: Podman, image: str, version: str) -> None:
    """`ghcr.io/astral-sh/uv:<version>`: the uv and uvx binaries from the PyPI wheel, in an empty image."""
    if podman.has_image(image, version):
        return
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        folder = Path(work)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "--platform", "manylinux_2_17_x86_64", f"uv=={version}", "-d", str(folder)],
            check=True,
        )  # fmt: skip
        with zipfile.ZipFile(next(folder.glob("uv-*.whl"))) as wheel:
            for member in wheel.namelist():
                name = Path(member).name
                if "/scripts/" in member and name in ("uv", "uvx"):
                    (folder / name).write_bytes(wheel.read(member))
                    (folder / name).chmod(0o755)  # zip extraction drops the exec bit
        label = f"LABEL ml-template.standin={_digest(version)}"
        (folder / "Containerfile").write_text(f"FROM scratch\nCOPY uv uvx /\n{label}\n")
        podman("build", "--pull=never", "-t", image, str(folder))


def standin_mlflow(podman: Podman, image: str, python_image: str, version: str) -> None:
    """`ghcr.io/mlflow/mlflow:v<version>`: the Python stand-in with mlflow from PyPI, as the official image."""
    recipe = f"FROM {python_image}\nRUN pip install --no-cache-dir mlflow=={version}\n"
    if podman.has_image(image, recipe):
        return
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        folder = Path(work)
        (folder / "Containerfile").write_text(f"{recipe}LABEL ml-template.standin={_digest(recipe)}\n")
        podman.build(folder, image)
