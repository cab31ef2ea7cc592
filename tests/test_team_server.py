"""The team tracking server of compose.team.yaml, run for real on 127.0.0.1 (no Docker engine here).

A real PostgreSQL (Debian's server, as an unprivileged user: initdb refuses root) and an S3 server (moto) stand in
for compose's `team-postgres` and the team's bucket. The `team-mlflow` service's exact command and environment run
from a virtual environment holding what the Dockerfile's `mlflow-team` stage installs (data/compat.yml
team_server); only the service host names, the bind address and the ports are swapped for local ones. The default
PyTorch project then trains through it with a user's login only, and the test reads the run back, checks that
anonymous and read-only requests are refused, and finds the artifacts in the bucket.
"""

from __future__ import annotations

import base64
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml

from helpers.net import free_port, mlflow_artifacts, mlflow_runs, request, serving
from helpers.projects import caches
from helpers.tools import tool
from matrix import COMPAT

pytestmark = pytest.mark.slow

# compose's `${NAME:?message}` and `${NAME:-default}`.
VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::([?-])([^}]*))?\}")
PASSWORDS = {"alice": "alice-password-1234", "bob": "bob-password-5678"}


def _interpolate(text: str, values: dict[str, str]) -> str:
    def resolve(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if values.get(name):
            return values[name]
        assert kind == "-", f"{name} is required by compose.team.yaml and the test did not set it"
        return rest

    return VARIABLE.sub(resolve, text)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _postgres_bin(name: str) -> str:
    """Debian's PostgreSQL server programs, installed from Debian when missing (as root, like CI)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if found is None and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"], check=True, env=env
        )
        found = next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if found is None:
        pytest.fail(f"{name} is missing: apt-get install postgresql")
    return found


def _as_unprivileged(command: list[str]) -> list[str]:
    """initdb and postgres refuse root: as root, run them as `nobody`."""
    return ["runuser", "-u", "nobody", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def team(installed_project) -> dict:
    """The rendered default project (installed) and compose.team.yaml's `team-mlflow` service."""
    project, env = installed_project("pytorch")
    services = yaml.safe_load((project / "compose.team.yaml").read_text())["services"]
    return {"project": project, "env": env, "service": services["team-mlflow"]}


@pytest.fixture(scope="module")
def server_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the `mlflow-team` stage installs on top of the MLflow image, at the same pins."""
    venv = tmp_path_factory.mktemp("team-server") / "venv"
    env = {**os.environ, **caches(), "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([tool("uv"), "venv", "-q", "--python", sys.executable, str(venv)], env=env, check=True)
    mlflow = f"mlflow[{COMPAT['team_server']['mlflow_extras']}]=={COMPAT['packages']['train']['mlflow']}"
    pins = [f"{name}=={version}" for name, version in COMPAT["team_server"]["packages"].items()]
    subprocess.run(
        [tool("uv"), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), mlflow, *pins],
        env=env, check=True, timeout=1200,
    )  # fmt: skip
    return venv


@pytest.fixture(scope="module")
def postgres(team: dict, server_venv: Path) -> Iterator[dict[str, str]]:
    """A PostgreSQL server on 127.0.0.1 with compose's user and databases (team/create-auth-db.sql run on it)."""
    password = "db-" + os.urandom(8).hex()
    root = Path(tempfile.mkdtemp(prefix="team-postgres-"))  # not under pytest's root-only tmp: `nobody` owns it
    data, port = root / "data", free_port()
    (root / "pwfile").write_text(password)
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
        shutil.chown(root / "pwfile", "nobody")
    initdb = [_postgres_bin("initdb"), "-D", str(data), "-U", "mlflow", "--pwfile", str(root / "pwfile")]
    subprocess.run(_as_unprivileged([*initdb, "--auth=scram-sha-256"]), check=True, capture_output=True)
    pg_ctl = _postgres_bin("pg_ctl")
    options = f"-h 127.0.0.1 -p {port} -k {root}"
    subprocess.run(
        _as_unprivileged([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]), check=True
    )
    try:
        setup = (team["project"] / "team" / "create-auth-db.sql").read_text()
        script = (
            "import sys, psycopg2\n"
            "connection = psycopg2.connect(host='127.0.0.1', port=sys.argv[1], user='mlflow', dbname='postgres')\n"
            "connection.autocommit = True\n"
            "connection.cursor().execute('CREATE DATABASE mlflow')\n"  # the image's POSTGRES_DB
            "connection.cursor().execute(sys.argv[2])\n"
        )
        subprocess.run(
            [str(server_venv / "bin" / "python"), "-c", script, str(port), setup],
            env={**os.environ, "PGPASSWORD": password}, check=True,
        )  # fmt: skip
        yield {"port": str(port), "password": password}
    finally:
        subprocess.run(_as_unprivileged([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]), check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto's S3 server on 127.0.0.1 and an empty bucket: the team's S3-compatible store."""
    root, port = tmp_path_factory.mktemp("s3"), free_port()
    store = {
        "endpoint": f"http://127.0.0.1:{port}",
        "bucket": "team-artifacts",
        "key_id": "server-key-" + os.urandom(4).hex(),
        "secret": "server-secret-" + os.urandom(8).hex(),
    }
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with serving(command, store["endpoint"], root / "moto.log", env={**os.environ, "HOME": str(root)}):
        _bucket(store).create_bucket(Bucket=store["bucket"])
        yield store


def _bucket(store: dict[str, str]):
    return boto3.client(
        "s3", endpoint_url=store["endpoint"], aws_access_key_id=store["key_id"],
        aws_secret_access_key=store["secret"], region_name="us-east-1",
    )  # fmt: skip


@pytest.fixture(scope="module")
def server(team: dict, server_venv: Path, postgres: dict, s3: dict, tmp_path_factory: pytest.TempPathFactory):
    """compose.team.yaml's `team-mlflow` command and environment, with .env values and local addresses."""
    root, port = tmp_path_factory.mktemp("team-mlflow"), free_port()
    service, project = team["service"], team["project"]
    dotenv = {
        "MLFLOW_TEAM_ADMIN_PASSWORD": "admin-" + os.urandom(8).hex(),
        "MLFLOW_TEAM_SECRET_KEY": os.urandom(16).hex(),
        "MLFLOW_TEAM_DB_PASSWORD": postgres["password"],
        "MLFLOW_TEAM_S3_ENDPOINT_URL": s3["endpoint"],
        "MLFLOW_TEAM_S3_BUCKET": s3["bucket"],
        "MLFLOW_TEAM_S3_ACCESS_KEY_ID": s3["key_id"],
        "MLFLOW_TEAM_S3_SECRET_ACCESS_KEY": s3["secret"],
    }
    local = {"team-postgres:5432": f"127.0.0.1:{postgres['port']}", "team-mlflow:5000": f"127.0.0.1:{port}"}

    def localize(text: str) -> str:
        for address, replacement in local.items():
            text = text.replace(address, replacement)
        return text

    assert {"--host=0.0.0.0", "--port=5000"} <= set(service["command"])
    bind = {"--host=0.0.0.0": "--host=127.0.0.1", "--port=5000": f"--port={port}"}
    command = [str(server_venv / "bin" / service["command"][0])]
    command += [bind.get(part, localize(_interpolate(part, dotenv))) for part in service["command"][1:]]
    environment = {name: localize(_interpolate(value, dotenv)) for name, value in service["environment"].items()}
    for volume in service["volumes"]:  # the bind-mounted auth config, its database host made local
        source, target = volume.split(":")[:2]
        copy = root / Path(target).name
        copy.write_text(localize((project / source).read_text()))
        environment = {name: value.replace(target, str(copy)) for name, value in environment.items()}
    env = {"PATH": os.environ["PATH"], "HOME": str(root), **environment}
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    with serving(command, f"{url}/health", log, cwd=root, env=env):
        yield {"url": url, "admin": _basic("admin", dotenv["MLFLOW_TEAM_ADMIN_PASSWORD"]), "log": log, "env": dotenv}


def test_a_user_trains_through_the_team_server_and_others_are_refused(team: dict, server: dict, s3: dict) -> None:
    url, admin = server["url"], server["admin"]
    for user, password in PASSWORDS.items():
        status, body = request(f"{url}/api/2.0/mlflow/users/create", {"username": user, "password": password}, admin)
        assert status == 200, body
    alice, bob = (_basic(user, password) for user, password in PASSWORDS.items())

    # A client holds the server's URL and its own login: no storage key, no database password.
    env = {name: value for name, value in team["env"].items() if not name.startswith(("AWS_", "MLFLOW_S3_"))}
    env |= {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "alice", "PYTHONHASHSEED": "0"}
    env["MLFLOW_TRACKING_PASSWORD"] = PASSWORDS["alice"]
    result = subprocess.run(
        [str(team["project"] / ".venv" / "bin" / "python"), "train.py", "--config", "configs/baseline.yaml",
         "--seed", "42", "--output-dir", str(Path(env["HOME"]) / "team-run"), "training.epochs=1"],
        cwd=team["project"], env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    runs = mlflow_runs(url, "baseline", alice)
    assert len(runs) == 1 and runs[0]["info"]["status"] == "FINISHED", runs
    run_id, experiment_id = runs[0]["info"]["run_id"], runs[0]["info"]["experiment_id"]
    assert {"test_accuracy", "test_loss"} <= {metric["key"] for metric in runs[0]["data"]["metrics"]}
    assert {"metrics.json", "run.json"} <= mlflow_artifacts(url, run_id, alice)

    api = f"{url}/api/2.0/mlflow"
    assert request(f"{api}/runs/get?run_id={run_id}")[0] == 401, "no login must be refused"
    assert request(f"{api}/runs/get?run_id={run_id}", headers=_basic("alice", "wrong-password-0000"))[0] == 401
    grant = {"username": "bob", "resource_type": "experiment", "resource_id": experiment_id, "permission": "READ"}
    status, body = request(f"{url}/api/3.0/mlflow/users/permissions/grant", grant, admin)
    assert status == 200, body
    assert request(f"{api}/runs/get?run_id={run_id}", headers=bob)[0] == 200, "a reader reads"
    status, body = request(f"{api}/runs/create", {"experiment_id": experiment_id}, bob)
    assert status == 403, f"a reader must not write: {status} {body}"
    assert request(f"{api}/runs/create", {"experiment_id": experiment_id}, alice)[0] == 200, "the owner writes"

    listing = _bucket(s3).list_objects_v2(Bucket=s3["bucket"], Prefix="mlflow-artifacts/")
    keys = [item["Key"] for item in listing.get("Contents", [])]
    assert any(key.endswith(f"{run_id}/artifacts/metrics.json") for key in keys), keys
    # The server's secrets stay in its environment: not in the client's output or the server's log.
    secrets = [server["env"][name] for name in ("MLFLOW_TEAM_ADMIN_PASSWORD", "MLFLOW_TEAM_DB_PASSWORD")]
    secrets += [s3["secret"]]
    for secret in secrets:
        assert secret not in result.stdout + result.stderr + server["log"].read_text()
