"""The launch files of every combination, checked offline: make's train-distributed, slurm/train.sbatch, k8s/ and
compose.multigpu.yaml all start what data/compat.yml's frameworks.<name>.launch says, the same way.

k8s/ is validated against the Kubernetes API schemas kubernetes-validate bundles (strict: an unknown field is an
error), at data/compat.yml's kubernetes_api, and a broken manifest is shown to fail. The Slurm script passes
`bash -n` and ShellCheck; tests/test_slurm.py runs it on a real cluster. (compose.multigpu.yaml is checked against
the compose spec with the other compose files, tests/test_matrix.py.)
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from helpers.rendering import combo_params, render
from helpers.tools import tool
from matrix import COMPAT, Combo

KUBERNETES = COMPAT["kubernetes_api"]
MANIFESTS = ("configmap.yaml", "job.yaml", "pvc.yaml", "service.yaml")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
PLACEHOLDERS = {"coordinator", "processes", "rank", "workers"}


def _told(launch: dict[str, Any], **values: str) -> dict[str, str]:
    """What compat's launch.env tells one process: each {placeholder} replaced by `values`' entry of that name."""
    return {
        name: re.sub(r"\{(\w+)\}", lambda match: values[match.group(1)], template)
        for name, template in launch["env"].items()
    }


def _manifests(project: Path) -> dict[str, dict[str, Any]]:
    return {name: yaml.safe_load((project / "k8s" / name).read_text()) for name in MANIFESTS}


def _validation_error(manifest: dict[str, Any]) -> str | None:
    try:
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"{'.'.join(map(str, error.path))}: {error.message}"
    return None


@pytest.fixture(scope="session")
def shellcheck_findings(rendered_matrix: dict[str, Path]) -> dict[str, list[str]]:
    """ShellCheck once over every rendered Slurm script (exit 0 clean, 1 findings; anything else fails)."""
    scripts = {str(project / "slurm" / "train.sbatch"): combo_id for combo_id, project in rendered_matrix.items()}
    result = subprocess.run([tool("shellcheck"), "--format=gcc", *scripts], capture_output=True, text=True)
    if result.returncode not in (0, 1):
        pytest.fail(f"shellcheck exited {result.returncode}: {result.stderr[-3000:]}")
    grouped: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        grouped.setdefault(scripts[line.split(":")[0]], []).append(line)
    return grouped


@pytest.mark.parametrize("combo", combo_params())
def test_kubernetes_manifests_validate_strictly(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    manifests = _manifests(rendered_matrix[combo.id])
    errors = {name: _validation_error(manifest) for name, manifest in manifests.items()}
    assert errors == dict.fromkeys(MANIFESTS), errors


@pytest.mark.parametrize("combo", combo_params())
def test_kubernetes_job_is_one_rendezvous_of_non_root_pods(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    manifests = _manifests(rendered_matrix[combo.id])
    job, service = manifests["job.yaml"], manifests["service.yaml"]
    name = job["metadata"]["name"]
    assert DNS_LABEL.fullmatch(name) and len(name) <= 60, name  # pod hostnames are NAME-INDEX
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    pods = spec["completions"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == pods > 1
    # The headless Service gives pod i the name NAME-i.SERVICE: it selects the Job's pods, and is their subdomain.
    assert service["spec"]["clusterIP"] == "None" and pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}
    (container,) = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    index = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == index
    assert next(iter(env)) == "JOB_COMPLETION_INDEX", "$(JOB_COMPLETION_INDEX) expands only in variables after it"
    launch = COMPAT["frameworks"][combo.framework]["launch"]
    script = container["args"][0]
    shellcheck = subprocess.run([tool("shellcheck"), "--shell=sh", "-"], input=script, capture_output=True, text=True)
    assert shellcheck.returncode == 0, shellcheck.stdout + shellcheck.stderr
    words = shlex.split(script.split("fi;", 1)[1])
    assert words[words.index("train.py") :][-1] == "distributed.enabled=true"
    host = f"{name}-0.{service['metadata']['name']}"
    if launch["torchrun"]:
        assert words[:2] == ["exec", "torchrun"], script
        assert f"--nnodes={pods}" in words and f"--master-addr={host}" in words
        assert '--node-rank="$JOB_COMPLETION_INDEX"' in script
    else:
        assert words[:3] == ["exec", "python", "train.py"], script
        port = container["ports"][0]["containerPort"]
        workers = ",".join(f'"{name}-{index}.{pod["subdomain"]}:{port}"' for index in range(pods))
        told = _told(launch, coordinator=f"{host}:{port}", processes=str(pods), rank="$(JOB_COMPLETION_INDEX)",
                     workers=workers)  # fmt: skip
        assert {variable: env[variable]["value"] for variable in told} == told
    # Secure defaults: non-root, no privilege escalation, no capabilities, read-only root, no API token.
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    hardening = container["securityContext"]
    assert hardening["allowPrivilegeEscalation"] is False and hardening["readOnlyRootFilesystem"] is True
    assert hardening["capabilities"]["drop"] == ["ALL"]
    image = container["image"]
    assert re.search(r"(:[\w.-]+|@sha256:[0-9a-f]+)$", image) and not image.endswith(":latest"), image
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpus is not None) == (combo.cuda != "cpu")
    # Settings from the ConfigMap, secrets from a Secret: no literal credential in the manifest.
    sources = {next(iter(item)): next(iter(item.values()))["name"] for item in container["envFrom"]}
    assert sources == {"configMapRef": manifests["configmap.yaml"]["metadata"]["name"], "secretRef": name}
    assert "MLFLOW_TRACKING_URI" in manifests["configmap.yaml"]["data"]
    assert not [item for item in container["env"] if re.search("PASSWORD|SECRET|TOKEN|KEY", item["name"])]
    claims = [
        volume["persistentVolumeClaim"]["claimName"] for volume in pod["volumes"] if "persistentVolumeClaim" in volume
    ]
    assert claims == [manifests["pvc.yaml"]["metadata"]["name"]]
    assert manifests["pvc.yaml"]["spec"]["accessModes"] == ["ReadWriteMany"], "pods on several nodes share the run"


@pytest.fixture(scope="module")
def default_job(default_project: Path) -> dict[str, Any]:
    job = _manifests(default_project)["job.yaml"]
    assert _validation_error(job) is None
    return job


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (["spec", "completions"], "two", "'two' is not of type 'integer'"),
        (["spec", "template", "spec", "containers", 0, "securityContext", "runAsNonroot"], True, "'runAsNonroot'"),
        (["spec", "template", "spec", "containers", 0, "resources", "limits"], ["memory"], "is not of type 'object'"),
    ],
    ids=["wrong-type", "unknown-field", "list-for-map"],
)
def test_a_broken_manifest_is_caught(default_job: dict[str, Any], where: list, value: Any, message: str) -> None:
    broken = copy.deepcopy(default_job)
    node = broken
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    error = _validation_error(broken)
    assert error is not None and message in error, error


@pytest.mark.parametrize("combo", combo_params())
def test_slurm_script_is_valid_bash_and_shellcheck_clean(
    combo: Combo, rendered_matrix: dict[str, Path], shellcheck_findings: dict[str, list[str]]
) -> None:
    script = rendered_matrix[combo.id] / "slurm" / "train.sbatch"
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    assert shellcheck_findings.get(combo.id, []) == []
    text = script.read_text()
    header = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", text, re.MULTILINE))
    lines = text.splitlines()
    first_command = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    assert not [line for line in lines[first_command:] if line.startswith("#SBATCH")], "sbatch stops at a command"
    assert {"nodes", "ntasks-per-node", "time", "requeue", "signal"} <= set(header), header
    assert ("gpus-per-node" in header) == (combo.cuda != "cpu")
    assert header["signal"].startswith("B:USR1@") and "scontrol requeue" in text
    launch = COMPAT["frameworks"][combo.framework]["launch"]
    if launch["torchrun"]:
        assert header["ntasks-per-node"] == "1", "one torchrun per node"
        for option in ('--nnodes="$SLURM_NNODES"', "--rdzv-backend=c10d", '--rdzv-endpoint="$head:$PORT"',
                       '--rdzv-id="$SLURM_JOB_ID"'):  # fmt: skip
            assert option in text, option
    else:  # one task per device; the framework reads Slurm's variables itself, so nothing is set for it
        assert "torchrun" not in text and not [name for name in launch["env"] if name in text]
    assert '"${train[@]}"' in text and "distributed.enabled=true)" in text


@pytest.mark.parametrize("combo", combo_params())
def test_make_train_distributed_starts_what_compat_says(
    combo: Combo, rendered_matrix: dict[str, Path], tmp_path: Path
) -> None:
    """The target runs for real, with stand-ins for .venv/bin's python and torchrun that record what they were given."""
    for program in ("python", "torchrun"):
        (tmp_path / program).write_text(
            '#!/bin/sh\nenv > "$RECORD/$$.env"\nprintf "%s\\n" "$0" "$@" > "$RECORD/$$.args"\n'
        )
        (tmp_path / program).chmod(0o755)
    record = tmp_path / "record"
    record.mkdir()
    command = ["make", "train-distributed", "NPROC=3", "PORT=4000", f"BIN={tmp_path}", "ARGS=training.epochs=2"]
    env = {"PATH": "/usr/bin:/bin", "RECORD": str(record)}
    subprocess.run(command, cwd=rendered_matrix[combo.id], env=env, capture_output=True, check=True, timeout=60)
    runs = []
    for path in sorted(record.glob("*.args")):
        lines = path.with_suffix(".env").read_text().splitlines()
        runs.append((path.read_text().splitlines(), dict(line.split("=", 1) for line in lines if "=" in line)))
    launch = COMPAT["frameworks"][combo.framework]["launch"]
    train = ["train.py", "--config", "configs/baseline.yaml", "--seed", "42", "training.epochs=2",
             "distributed.enabled=true"]  # fmt: skip
    if launch["torchrun"]:
        ((args, _),) = runs
        assert args == [str(tmp_path / "torchrun"), "--standalone", "--nproc-per-node=3", *train]
        return
    assert len(runs) == 3 and all(args == [str(tmp_path / "python"), *train] for args, _ in runs)
    workers = ",".join(f'"127.0.0.1:{port}"' for port in (4000, 4001, 4002))
    expected = []
    for rank in range(3):
        told = _told(launch, coordinator="127.0.0.1:4000", processes="3", rank=str(rank), workers=workers)
        if combo.cuda != "cpu":
            told["CUDA_VISIBLE_DEVICES"] = str(rank)  # one GPU per process
        expected.append(told)
    got = [{name: env[name] for name in expected[0] if name in env} for _, env in runs]
    assert sorted(got, key=str) == sorted(expected, key=str)
    if "TF_CONFIG" in launch["env"]:
        assert {json.loads(told["TF_CONFIG"])["task"]["index"] for told in got} == {0, 1, 2}


@pytest.mark.parametrize("nproc", ["0", "two", ""])
def test_make_train_distributed_refuses_a_bad_nproc_in_one_line(default_project: Path, nproc: str) -> None:
    result = subprocess.run(
        ["make", "-s", "train-distributed", f"NPROC={nproc}", "BIN=/nonexistent"],
        cwd=default_project, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == f"error: NPROC='{nproc}' is not a number of processes", result.stderr


def test_launch_facts_use_known_placeholders() -> None:
    for name, framework in COMPAT["frameworks"].items():
        launch = framework["launch"]
        assert set(launch) == {"torchrun", "env"}, name
        assert launch["torchrun"] == (name == "pytorch"), "torchrun is PyTorch's own launcher"
        for variable, template in launch["env"].items():
            assert set(re.findall(r"\{(\w+)\}", template)) <= PLACEHOLDERS, (variable, template)
            assert "{rank}" in "".join(launch["env"].values()), "each process is told which one it is"


def test_an_odd_package_name_still_gives_dns_labels(template: Path, tmp_path: Path) -> None:
    project = render(template, tmp_path / "p", {"package_name": "_" + "a_b" * 30 + "_"})
    for manifest in _manifests(project).values():
        name = manifest["metadata"]["name"]
        assert DNS_LABEL.fullmatch(name) and len(name) <= 60, name
