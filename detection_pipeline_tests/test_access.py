"""Who may do what: the shipped nginx config (deploy/nginx) in front of the webservers asks
everyone for a login, gives administrators the UI, GraphQL and the CLI's --url, and viewers
only the read-only UI."""

import base64
import contextlib
import dataclasses
import os
import socket
import ssl
import subprocess
import urllib.parse
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


@dataclasses.dataclass(frozen=True)
class Proxy:
    url: str  # https://127.0.0.1:PORT
    port: int
    http_url: str  # the plain-http port, which only redirects
    certificate: Path  # what clients trust (self-signed for 127.0.0.1)
    access_log: Path  # method, path, status, user and origin of each request


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    certificate, key = folder / "proxy.pem", folder / "proxy.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(certificate), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        capture_output=True,
        check=True,
    )
    return certificate, key


@contextlib.contextmanager
def nginx(folder: Path, admin_url: str, viewer_url: str) -> Iterator[Proxy]:
    """nginx running the shipped config, with only its ports, certificate and files changed for
    the test (nginx, unprivileged, in `folder`)."""
    nginx = system_tool("nginx")
    (folder / "logs").mkdir(parents=True)  # where nginx logs before it reads its config
    port, http_port = free_port(), free_port()
    certificate, key = _certificate(folder)
    server = SHIPPED.read_text()
    for old, new in {
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "/etc/ssl/certs/detection-pipeline.pem": str(certificate),
        "/etc/ssl/private/detection-pipeline.key": str(key),
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
    access_log = folder / "access.log"
    (folder / "nginx.conf").write_text(
        f"{user}pid {folder}/nginx.pid;\nerror_log {folder}/error.log;\nevents {{}}\n"
        "http {\n  log_format probes '$request_method $uri $status [$remote_user] "
        "[$http_origin]';\n"
        f"  access_log {access_log} probes;\n"
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
    try:
        wait_until(lambda: _listening(port) or process.poll() is not None, timeout=30)
        assert process.poll() is None, process.stderr.read()
        yield Proxy(
            f"https://127.0.0.1:{port}",
            port,
            f"http://127.0.0.1:{http_port}",
            certificate,
            access_log,
        )
    finally:
        process.terminate()
        process.wait(timeout=30)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def websocket_handshake(
    url: str, path: str, auth: tuple[str, str] | None, origin: str | None = None, cafile=None
) -> str:
    """The status line a WebSocket handshake on `path` at `url` (http or https) is answered with."""
    parts = urllib.parse.urlsplit(url)
    headers = {
        "Host": parts.netloc,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": "graphql-ws",
    }
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    if origin:
        headers["Origin"] = origin
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as plain:
        sock = plain
        if parts.scheme == "https":
            sock = ssl.create_default_context(cafile=cafile).wrap_socket(
                plain, server_hostname=parts.hostname
            )
        sock.sendall((request + "\r\n").encode())
        return sock.recv(1024).decode(errors="replace").splitlines()[0]


@contextlib.contextmanager
def proxied(served, folder: Path, monkeypatch) -> Iterator[Proxy]:
    """The served home's admin webserver and a read-only one at /view behind the shipped proxy.
    Clients here and the CLI trust its certificate."""
    queue, admin_url = served
    with (
        serving(queue.settings, read_only=True, path_prefix="/view") as viewer_url,
        nginx(folder, admin_url, viewer_url) as proxy,
    ):
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(proxy.certificate))
        yield proxy


@pytest.mark.parametrize("open_queue", ["sqlite"], indirect=True)
def test_the_proxy_lets_administrators_drive_and_viewers_only_watch(served, tmp_path, monkeypatch):
    queue, _ = served
    admin, viewer = USERS["admins"], USERS["viewers"]
    with proxied(served, tmp_path / "nginx", monkeypatch) as proxied_by:
        proxy, port, cafile = proxied_by.url, proxied_by.port, proxied_by.certificate
        # nobody gets in without a login, nor with a wrong one, nor a viewer as administrator
        assert requests.get(f"{proxy}/", timeout=10).status_code == 401
        assert requests.get(f"{proxy}/", auth=(admin[0], "wrong"), timeout=10).status_code == 401
        assert requests.get(f"{proxy}/", auth=viewer, timeout=10).status_code == 401
        assert requests.get(f"{proxy}/server_info", auth=admin, timeout=10).status_code == 200
        assert requests.get(f"{proxy}/view/server_info", auth=viewer, timeout=10).ok
        assert websocket_handshake(proxy, "/graphql", admin, cafile=cafile).startswith(
            "HTTP/1.1 101"
        )

        # administrators launch over GraphQL and with the CLI, through the proxy
        client = DagsterGraphQLClient(
            "127.0.0.1", port_number=port, use_https=True, auth=requests.auth.HTTPBasicAuth(*admin)
        )
        images = queue.settings.data_dir / "urgent"
        run_id = client.submit_job_execution("detect", run_config=detect_config(images, "dumps"))
        # the login from ~/.netrc (here the file $NETRC names), not on the command line
        netrc = tmp_path / "netrc"
        netrc.write_text(f'machine 127.0.0.1 login {admin[0]} password "{admin[1]}"\n')
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        remote = cli(
            "--url",
            proxy,
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
        assert admin[1] not in remote.stdout + remote.stderr  # the password is never shown
        monkeypatch.delenv("NETRC")
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc there
        refused = cli("--url", proxy, "runs")
        assert refused.returncode == 1 and "401" in refused.stderr
        # in the URL it works too, with a warning: the process list shows it
        password = admin[1].replace(" ", "%20")
        listed = cli("--url", proxy.replace("https://", f"https://{admin[0]}:{password}@"), "runs")
        assert listed.returncode == 0 and "process list" in listed.stderr
        assert admin[1] not in listed.stdout + listed.stderr

        # viewers see everything and change nothing
        watcher = DagsterGraphQLClient(
            "127.0.0.1",
            port_number=port,
            use_https=True,
            path_prefix="/view",
            auth=requests.auth.HTTPBasicAuth(*viewer),
        )
        assert watcher.get_run_status(run_id).value == "SUCCESS"
        with pytest.raises(DagsterGraphQLClientError, match="Unauthorized|permission"):
            watcher.submit_job_execution("detect", run_config=detect_config(images, "dumps"))
