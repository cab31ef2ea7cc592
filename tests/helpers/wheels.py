"""The CPU torch wheel behind a PEP 503 index on 127.0.0.1: the stand-in for a company mirror."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

# The environment variables naming the session's index (tests/conftest.py): its folder and its URL.
WHEEL_INDEX = "ML_TEMPLATE_WHEEL_INDEX"
WHEEL_INDEX_URL = "ML_TEMPLATE_WHEEL_INDEX_URL"


def find_torch_cpu_wheel(version: str) -> Path | None:
    """The CPU torch wheel from pip's find-links folders (a company cache or this machine's disk)."""
    config = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    folders = [os.environ.get("PIP_FIND_LINKS", "")]
    folders += [line.split("=", 1)[1].strip("'\"") for line in config.splitlines() if "find-links" in line]
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for folder in " ".join(folders).split():
        for wheel in Path(folder.removeprefix("file://")).glob(f"torch-{version}+cpu-{tag}-*.whl"):
            return wheel
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that stopped a download it did not need
            super().handle_error(request, client_address)


def add_wheel(wheel: Path, root: Path) -> None:
    """Put `wheel` in the PEP 503 tree under `root`: root/simple/<project>/."""
    project = wheel.name.split("-", 1)[0]
    package = root / "simple" / project
    package.mkdir(parents=True, exist_ok=True)
    shutil.copy(wheel, package / wheel.name)
    link = wheel.name.replace("+", "%2B")
    (package / "index.html").write_text(f'<html><body><a href="{link}">{wheel.name}</a></body></html>\n')
    (root / "simple" / "index.html").write_text(f'<html><body><a href="{project}/">{project}</a></body></html>\n')


def has_wheel(root: Path) -> bool:
    return (root / "simple" / "index.html").exists()


def serve_folder(root: Path) -> http.server.ThreadingHTTPServer:
    """Serve `root` on a free port of 127.0.0.1 (what it holds may be added later); see `index_url`."""
    server = _QuietServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def serve_wheel_index(wheel: Path, root: Path) -> http.server.ThreadingHTTPServer:
    """Serve `wheel` from `root`/simple/<project>/ on a free port; the index URL is `index_url(server)`."""
    add_wheel(wheel, root)
    return serve_folder(root)


def index_url(server: http.server.ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/simple"
