"""Scaling out, end to end: two queued DVC experiments (2 processes under torchrun, and 1) logging to a real
`mlflow server` on 127.0.0.1, found through the server's REST API.

One test covers the whole "Scaling out" story of the README at once (it is the slow part): the server (sqlite
backend, local artifact root) starts while the repo copy is made; `dvc exp run --queue` twice, then
`dvc exp run --run-all --jobs 1` runs both in DVC's temp copies (`.dvc/tmp/exps/`), where the train stage
re-runs itself under torchrun for `train.nproc=2`. The two experiments must log one training run each, named
`<model>@<exp>` and tagged `dvc_exp_name`, and train to the same per-step losses (DDP is not bitwise:
rtol 1e-5).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import VENV_BIN, make_repo_copy, run_cmd, tiny_params

pytestmark = pytest.mark.slow

MODEL = "gpt-tiny-trained"  # the default catalog entry's trained folder
SERVER_START_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], float]]:
    """A real `mlflow server` on a free port of 127.0.0.1 (sqlite backend and artifacts under `root`), in its
    own process group; yields (url, process, the time it was started) and stops the group at the end."""
    port = _free_port()
    root.mkdir(parents=True, exist_ok=True)
    command = [
        str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (root / "server.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", proc, started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker: the group we started
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(f"{url}/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.25)
    raise AssertionError(
        f"mlflow server not healthy after {SERVER_START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
    )


def foundry_runs(url: str) -> list[dict[str, Any]]:
    """Every run of the experiment `model-foundry` on the server (REST API: get-by-name, runs/search)."""
    query = urllib.parse.urlencode({"experiment_name": "model-foundry"})
    experiment = _get(f"{url}/api/2.0/mlflow/experiments/get-by-name?{query}")["experiment"]
    body = {"experiment_ids": [experiment["experiment_id"]], "max_results": 100}
    return list(_post(f"{url}/api/2.0/mlflow/runs/search", body).get("runs", []))


def loss_history(url: str, run_id: str) -> list[tuple[int, float]]:
    """The run's (step, train_loss) pairs, from the server's metric history."""
    query = urllib.parse.urlencode({"run_id": run_id, "metric_key": "train_loss", "max_results": 1000})
    metrics = _get(f"{url}/api/2.0/mlflow/metrics/get-history?{query}")["metrics"]
    return sorted((int(m["step"]), float(m["value"])) for m in metrics)


def artifact_names(url: str, run_id: str) -> set[str]:
    query = urllib.parse.urlencode({"run_id": run_id})
    return {f["path"] for f in _get(f"{url}/api/2.0/mlflow/artifacts/list?{query}").get("files", [])}


def exp_csv(repo: Path, name: str, path: str) -> list[tuple[int, float]]:
    """A file of the experiment `name`'s commit (refs/exps/<baseline>/<name>), read as (step, value) rows."""
    refs = run_cmd(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"], repo).stdout.split()
    (ref,) = [r for r in refs if r.endswith(f"/{name}")]
    lines = run_cmd(["git", "show", f"{ref}:{path}"], repo).stdout.strip().splitlines()[1:]
    return [(int(step), float(value)) for step, value in (line.split(",") for line in lines)]


def test_queued_experiments_on_two_and_one_processes_log_once_to_a_server_and_agree(tmp_path: Path) -> None:
    params = tiny_params()
    # a loss at every step; fp32: bf16 autocast (`precision: auto` on CPUs with AMX) rounds the gradient
    # matmuls of a half batch differently (measured: rel 1.3e-5 after 6 steps)
    params["train"].update({"log_interval": 1, "precision": "fp32"})
    # params.yaml must name train.nproc for `-S train.nproc=2` (DVC refuses a new key without `+`)
    params["train"].setdefault("nproc", 1)
    steps = list(range(1, params["train"]["steps"] + 1))
    names = {"ddp-two": 2, "one-proc": 1}  # experiment name → train.nproc
    with mlflow_server(tmp_path / "server") as (url, proc, started):
        # while the server starts: the stages both experiments share, committed (their temp copies check the
        # outputs out of the cache and run only train and evaluate)
        repo = make_repo_copy(tmp_path / "repo", params)
        run_cmd(["dvc", "repro", "tokenize"], repo, timeout=300)
        run_cmd(["git", "add", "-A"], repo)
        run_cmd(["git", "commit", "-qm", "data and base model"], repo)
        wait_healthy(url, proc, tmp_path / "server" / "server.log")
        print(f"mlflow server healthy {time.monotonic() - started:.1f} s after its start")
        env = {"MLFLOW_TRACKING_URI": url}
        for name, nproc in names.items():
            queue = ["dvc", "exp", "run", "--queue", "--name", name, "-S", f"train.nproc={nproc}"]
            run_cmd(queue, repo, env=env)
        ran = run_cmd(
            ["dvc", "exp", "run", "--run-all", "--jobs", "1"], repo, env=env, check=False, timeout=600
        )
        status = run_cmd(["dvc", "queue", "status"], repo).stdout
        if ran.returncode != 0 or "Failed" in status:
            logs = [run_cmd(["dvc", "queue", "logs", n], repo, check=False).stdout for n in names]
            raise AssertionError("\n".join([ran.stdout, ran.stderr, status, *logs]))
        assert all(f"{name} " in status for name in names) and status.count("Success") == 2, status

        by_exp: dict[str, list[dict[str, Any]]] = {}
        for run in foundry_runs(url):
            tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
            by_exp.setdefault(tags.get("dvc_exp_name", ""), []).append({**run, "tags": tags})
        # one run per experiment: rank 0 alone logs, the relaunching parent does not, and evaluate adds its
        # metrics to the training run instead of a `-eval` run of its own
        assert {name: len(runs) for name, runs in by_exp.items()} == dict.fromkeys(names, 1), by_exp
        histories = {}
        for name, nproc in names.items():
            (run,) = by_exp[name]
            run_id = run["info"]["run_id"]
            assert (run["info"]["run_name"], run["info"]["status"]) == (f"{MODEL}@{name}", "FINISHED")
            assert run["tags"]["stage"] == "train"
            logged = {p["key"]: p["value"] for p in run["data"]["params"]}
            assert (logged["world_size"], logged["train.nproc"]) == (str(nproc), str(nproc))
            assert logged["runtime"].endswith(" processes=2") == (nproc == 2), logged["runtime"]
            assert "eval_perplexity" in {m["key"] for m in run["data"]["metrics"]}
            histories[name] = loss_history(url, run_id)
            assert [s for s, _ in histories[name]] == steps
            # the experiment's own plot (committed to its ref) holds the curve MLflow has
            plotted = exp_csv(repo, name, "plots/train_loss.csv")  # 6 decimals
            assert [s for s, _ in plotted] == steps
            assert [v for _, v in plotted] == pytest.approx([v for _, v in histories[name]], rel=1e-6)
            # artifacts go where the server puts them (--artifacts-destination), not into the project
            assert "loss_curve.png" in artifact_names(url, run_id)
        assert len(list((tmp_path / "server" / "artifacts").rglob("loss_curve.png"))) == 2
        assert not (repo / "mlartifacts").exists()

    two, one = ([loss for _, loss in histories[name]] for name in names)
    assert two == pytest.approx(one, rel=1e-5)  # DDP is not bitwise: the same floats up to reduction order
