"""Helpers of the serving tests: tiny real model folders and `foundry serve` run as a real process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FOUNDRY = str(Path(sys.executable).parent / "foundry")
API_KEY = "test-key-123"


def build_models(models: Path) -> dict[str, Path]:
    """`qwen-chat`: the local Hub's tiny Qwen2 (ChatML template, context 256) imported as `foundry
    import-model` does; `gpt-plain`: a tiny scratch GPT (no chat template, context 256). name → folder."""
    from localhub.repos import build_qwen2
    from model_foundry.hub import import_model
    from model_foundry.hub.report import QuietReporter
    from registry.registry_repo import build_base

    build_qwen2(models.parent / "qwen2-source")
    qwen = import_model(
        str(models.parent / "qwen2-source"),
        models,
        name="qwen-chat",
        accept_license=True,
        reporter=QuietReporter(),
    ).path
    build_base(models / "gpt-plain", block_size=256)
    return {"qwen-chat": Path(qwen), "gpt-plain": models / "gpt-plain"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    url: str,
    data: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Answer:
    """GET (data None) or POST `url`; any status is returned, not raised."""
    body = json.dumps(data).encode() if isinstance(data, dict) else data
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


@dataclass
class Startup:
    """What a test saw while a server started: seconds from Popen to the first /health 200, the /ready and
    completion answers while loading, seconds to /ready 200."""

    health_s: float = 0.0
    ready_while_loading: list[Answer] = field(default_factory=list)
    completion_while_loading: Answer | None = None
    ready_s: float = 0.0


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    port: int
    startup: Startup

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        """Stop the server (SIGTERM, then SIGKILL) and return its stderr."""
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def start_server(
    args: list[str], env: dict[str, str] | None = None, wait_ready: bool = True
) -> ServerProcess:
    """`foundry serve ARGS --port <free>`, watched until /ready leaves 503 (or only until /health when not
    `wait_ready`). Records the startup (see Startup)."""
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        [FOUNDRY, "serve", *args, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    server = ServerProcess(proc, port, Startup())
    deadline = started + 120
    while True:
        try:
            if http(f"{server.url}/health", timeout=1).status == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"foundry serve did not start:\n{server.stop()}")
        time.sleep(0.01)
    server.startup.health_s = time.monotonic() - started
    while wait_ready:
        ready = http(f"{server.url}/ready")
        if ready.status != 503:
            break
        server.startup.ready_while_loading.append(ready)
        if server.startup.completion_while_loading is None:
            body = {"model": Path(args[0]).name, "prompt": "the"}
            headers = {"Authorization": f"Bearer {API_KEY}"}
            server.startup.completion_while_loading = http(f"{server.url}/v1/completions", body, headers)
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"foundry serve did not get ready:\n{server.stop()}")
        time.sleep(0.05)
    server.startup.ready_s = time.monotonic() - started
    return server
