"""Who may do what: the shipped nginx config (deploy/nginx) in front of the webservers asks
everyone for a login, gives administrators the UI, GraphQL and the CLI's --url, and viewers
only the read-only UI."""

import base64
import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from .conftest import cli, detect_config, free_port, serving, system_tool, wait_until

SHIPPED = Path(__file__).parents[1] / "deploy" / "nginx" / "detection-pipeline.conf"
USERS = {"admins": ("ops", "admin secret"), "viewers": ("anna", "viewer secret")}


def _password_file(path: Path, user: str, password: str) -> Path:
    """As the config's comment says to make it."""
    hashed = subprocess.run(
        ["openssl", "passwd", "-5", password], capture_output=True, text=True, check=True
    ).stdout.strip()
    path.write_text(f"{user}:{hashed}\n")
    return path


@contextlib.contextmanager
def _nginx(folder: Path, admin_url: str, viewer_url: str) -> Iterator[str]:
    """nginx running the shipped server block, with only its ports and files changed for the
    test (nginx, unprivileged, in `folder`); yields the proxy's URL."""
    nginx = system_tool("nginx")
    (folder / "logs").mkdir(parents=True)  # where nginx logs before it reads its config
    port = free_port()
    server = SHIPPED.read_text()
    for old, new in {
        "listen 8080;": f"listen 127.0.0.1:{port};",
        "127.0.0.1:3000": admin_url.removeprefix("http://"),
        "127.0.0.1:3001": viewer_url.removeprefix("http://").removesuffix("/view"),
        "/etc/nginx/detection-pipeline.admins": str(folder / "admins"),
        "/etc/nginx/detection-pipeline.viewers": str(folder / "viewers"),
    }.items():
        assert old in server
        server = server.replace(old, new)
    for role, (user, password) in USERS.items():
        _password_file(folder / role, user, password)
    (folder / "server.conf").write_text(server)
    # Started by root, nginx's workers would become `nobody`, who cannot enter the test's
    # private temporary folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    (folder / "nginx.conf").write_text(
        f"{user}pid {folder}/nginx.pid;\nerror_log {folder}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log {folder}/access.log;\n"
        + "".join(
            f"  {kind}_temp_path {folder}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"  include {folder}/server.conf;\n}}\n"
    )
    process = subprocess.Popen(
        [nginx, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _listening(port) or process.poll() is not None, timeout=30)
        assert process.poll() is None, process.stderr.read()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _websocket_upgrade(port: int, path: str, user: str, password: str) -> str:
    """The status line the proxy answers a WebSocket handshake on `path` with."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-ws\r\n"
        f"Authorization: Basic {token}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        return sock.recv(1024).decode(errors="replace").splitlines()[0]


@pytest.mark.parametrize("open_queue", ["sqlite"], indirect=True)
def test_the_proxy_lets_administrators_drive_and_viewers_only_watch(served, tmp_path):
    queue, admin_url = served
    admin, viewer = USERS["admins"], USERS["viewers"]
    with (
        serving(queue.settings, read_only=True, path_prefix="/view") as viewer_url,
        _nginx(tmp_path / "nginx", admin_url, viewer_url) as proxy,
    ):
        port = int(proxy.rsplit(":", 1)[1])
        # nobody gets in without a login, nor with a wrong one, nor a viewer as administrator
        assert requests.get(f"{proxy}/", timeout=10).status_code == 401
        assert requests.get(f"{proxy}/", auth=(admin[0], "wrong"), timeout=10).status_code == 401
        assert requests.get(f"{proxy}/", auth=viewer, timeout=10).status_code == 401
        assert requests.get(f"{proxy}/server_info", auth=admin, timeout=10).status_code == 200
        assert requests.get(f"{proxy}/view/server_info", auth=viewer, timeout=10).ok
        assert _websocket_upgrade(port, "/graphql", *admin).startswith("HTTP/1.1 101")

        # administrators launch over GraphQL and with the CLI, through the proxy
        client = DagsterGraphQLClient(
            "127.0.0.1", port_number=port, auth=requests.auth.HTTPBasicAuth(*admin)
        )
        images = queue.settings.data_dir / "urgent"
        run_id = client.submit_job_execution("detect", run_config=detect_config(images, "dumps"))
        remote = cli(
            "--url",
            f"http://{admin[0]}:{admin[1].replace(' ', '%20')}@127.0.0.1:{port}",
            "detect",
            "--images",
            str(images),
            "--model",
            "dumps",
            "--wait",
        )
        assert remote.returncode == 0, remote.stderr
        first = wait_until(
            lambda: next((r for r in queue.store.list_runs() if r.dagster_run_id == run_id), None)
        )
        assert queue.wait(first.id, timeout_seconds=120).status == "success"
        refused = cli("--url", proxy, "runs")
        assert refused.returncode == 1 and "401" in refused.stderr
        assert admin[1] not in remote.stdout + remote.stderr  # the password is never shown

        # viewers see everything and change nothing
        watcher = DagsterGraphQLClient(
            "127.0.0.1",
            port_number=port,
            path_prefix="/view",
            auth=requests.auth.HTTPBasicAuth(*viewer),
        )
        assert watcher.get_run_status(run_id).value == "SUCCESS"
        with pytest.raises(DagsterGraphQLClientError, match="Unauthorized|permission"):
            watcher.submit_job_execution("detect", run_config=detect_config(images, "dumps"))
