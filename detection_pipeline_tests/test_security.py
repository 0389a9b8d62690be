"""An attacker's suite: the holes found by attacking the product (issue 29), tried again against
the shipped nginx config in a real nginx, the product's own webserver and daemon, and Chromium
for a hostile page. Each probe must be refused and leave nothing done: no run launched,
terminated or deleted, the upkeep sensor still on, no asset event forged, no file outside a
run's folder read or written. docs/security.md lists the probes and what they found."""

import http.server
import json
import math
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from detection_pipeline import run_tags
from detection_pipeline.errors import InputError
from detection_pipeline.fork_server import RUNTIME_DIR_ENV, UnsafeRuntimeDir, runtime_dir
from detection_pipeline.jobs.record_lifecycle import NOT_RETRIED_BAD_INPUT
from detection_pipeline.mmdet_runner.safe_config import UnsafeConfig, check_config
from detection_pipeline.records.service import RunService, _queue_dagster_run

from .conftest import (
    bait,
    cli,
    detect_config,
    execute_job,
    make_home,
    register_as,
    system_tool,
    wait_until,
    was_read,
)
from .test_access import USERS, proxied, websocket_handshake
from .test_browser import CHROMIUM_ARGS

LOCATION = "detection_pipeline.definitions"
SELECTOR = f'repositoryLocationName: "{LOCATION}", repositoryName: "__repository__"'
SENSOR_QUERY = (
    f'{{ sensorOrError(sensorSelector: {{{SELECTOR}, sensorName: "run_upkeep"}}) '
    "{ ... on Sensor { id sensorState { status } } } }"
)
EVIL_HOST = "evil.example"
REFUSED = {400, 403, 415}


def _literal(value) -> str:
    """`value` as a GraphQL literal (what an attacker writes into a URL)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_literal(v)}" for key, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_literal, value)) + "]"
    return json.dumps(value)


def _launch(run_config: dict) -> str:
    return (
        f'mutation {{ launchRun(executionParams: {{selector: {{{SELECTOR}, jobName: "detect"}}, '
        f"runConfigData: {_literal(run_config)}}}) {{ __typename ... on PythonError {{ message }} }} }}"
    )


def _graphql(url: str, query: str, auth=None) -> dict:
    """A query as the UI sends it: a JSON POST."""
    answer = requests.post(f"{url}/graphql", json={"query": query}, auth=auth, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def _forged_requests(mutation: str) -> dict[str, dict]:
    """Each shape of request that got `mutation` run by Dagster's webserver, by name: as
    requests.request keyword arguments (the URL is the caller's)."""
    in_url = {"params": {"query": mutation}}
    return {
        "GET with the query in the URL": {"method": "GET", **in_url},
        "POST text/plain, query in the URL": {
            "method": "POST",
            "headers": {"Content-Type": "text/plain"},
            "data": "x",
            **in_url,
        },
        "POST form, query in the URL": {"method": "POST", "data": {"a": "b"}, **in_url},
        "POST multipart, query in the URL": {"method": "POST", "files": {"f": b"x"}, **in_url},
        "POST 'text/plain; application/json'": {
            "method": "POST",
            "headers": {"Content-Type": "text/plain; application/json"},
            "data": json.dumps({"query": mutation}),
        },
        "JSON POST from another site's page": {
            "method": "POST",
            "json": {"query": mutation},
            "headers": {"Origin": f"https://{EVIL_HOST}"},
        },
        "JSON POST another site made (Sec-Fetch-Site)": {
            "method": "POST",
            "json": {"query": mutation},
            "headers": {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"},
        },
    }


def _probe(url: str, auth, mutation: str) -> dict[str, int]:
    return {
        name: requests.request(url=f"{url}/graphql", auth=auth, timeout=60, **shape).status_code
        for name, shape in _forged_requests(mutation).items()
    }


@pytest.mark.parametrize("open_queue", ["sqlite"], indirect=True)
def test_cross_site_requests_are_refused_by_the_proxy_and_by_the_webserver(
    served, tmp_path, monkeypatch
):
    queue, webserver = served
    admin = USERS["admins"]
    data = queue.settings.data_dir
    with proxied(served, tmp_path / "nginx", monkeypatch) as proxy:
        # The probes are real: the same launch as a JSON POST launches a run.
        control = _graphql(proxy.url, _launch(detect_config(data / "urgent", "dumps")), admin)
        assert control["launchRun"]["__typename"] == "LaunchRunSuccess"
        finished = wait_until(lambda: queue.store.list_runs(status="success"), timeout=240)[0]
        long_run = queue.submit("detection", {"images": [str(data / "photos")], "model": "dumps"})
        wait_until(lambda: queue.store.get_run(long_run.id).status == "processing", timeout=120)
        sensor = _graphql(proxy.url, SENSOR_QUERY, admin)["sensorOrError"]
        runs_before = queue.instance.get_runs_count()

        mutations = {
            "launchRun": _launch(detect_config(data / "urgent", "dumps")),
            "terminateRun": f'mutation {{ terminateRun(runId: "{long_run.dagster_run_id}") '
            "{ __typename } }",
            "deleteRun": f'mutation {{ deleteRun(runId: "{finished.dagster_run_id}") '
            "{ __typename } }",
            "stopSensor": f'mutation {{ stopSensor(id: "{sensor["id"]}") {{ __typename }} }}',
        }
        for target, auth in ((proxy.url, admin), (webserver, None)):
            for name, mutation in mutations.items():
                answers = _probe(target, auth, mutation)
                assert set(answers.values()) <= REFUSED, (target, name, answers)
            forged = requests.post(
                f"{target}/report_asset_materialization/models/demo",
                params={"description": "forged"},
                auth=auth,
                timeout=30,
            )
            assert forged.status_code in REFUSED, (target, forged.status_code)
            handshake = websocket_handshake(
                target, "/graphql", auth, f"https://{EVIL_HOST}", proxy.certificate
            )
            assert " 403 " in handshake, (target, handshake)
            page = requests.get(f"{target}/", auth=auth, timeout=30)
            assert page.headers["X-Frame-Options"] == "DENY"
            assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
            # what the UI does still works: JSON with `?op=` and its own Origin, its WebSocket
            ui = requests.post(
                f"{target}/graphql?op=Version",
                json={"query": "{ version }"},
                headers={"Origin": target},
                auth=auth,
                timeout=30,
            )
            assert ui.status_code == 200, ui.text
            assert " 101 " in websocket_handshake(
                target, "/graphql", auth, target, proxy.certificate
            )

        # nothing happened
        assert queue.instance.get_runs_count() == runs_before
        assert queue.store.get_run(long_run.id).status == "processing"
        assert queue.instance.get_run_by_id(finished.dagster_run_id) is not None
        status = _graphql(proxy.url, SENSOR_QUERY, admin)["sensorOrError"]["sensorState"]
        assert status["status"] == "RUNNING"
        assert queue.instance.get_latest_materialization_event(AssetKey(["models", "demo"])) is None
        queue.terminate(long_run.id)


class _AttackerSite(http.server.ThreadingHTTPServer):
    """evil.example: serves one page that tries to use the admin's login at the proxy."""

    def __init__(self, page: str):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def _attack_page(proxy: str, mutation: str) -> str:
    target = f"{proxy}/graphql?query={requests.utils.quote(mutation)}"
    body = json.dumps({"query": mutation})
    return f"""<!doctype html><html><body>
<img src="{target}">
<iframe name="sink"></iframe>
<form id="form" method="POST" action="{target}" target="sink"><input name="a" value="b"></form>
<iframe id="framed" src="{proxy}/"></iframe>
<script>
window.results = {{}};
fetch({json.dumps(proxy + "/graphql")}, {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "text/plain"}}, body: {json.dumps(body)}}})
  .then(() => window.results.fetch = "sent", () => window.results.fetch = "failed");
const socket = new WebSocket({json.dumps(proxy.replace("https", "wss") + "/graphql")}, "graphql-ws");
socket.onopen = () => window.results.websocket = "open";
socket.onerror = () => window.results.websocket = "refused";
document.getElementById("form").submit();
</script></body></html>"""


@pytest.mark.parametrize("open_queue", ["sqlite"], indirect=True)
def test_a_hostile_page_cannot_use_an_administrators_browser(served, tmp_path, monkeypatch):
    chromium = system_tool("chromium")
    from playwright.sync_api import sync_playwright

    queue, _ = served
    admin = USERS["admins"]
    mutation = _launch(detect_config(queue.settings.data_dir / "urgent", "dumps"))
    with (
        proxied(served, tmp_path / "nginx", monkeypatch) as proxy,
        sync_playwright() as playwright,
    ):
        site = _AttackerSite(_attack_page(proxy.url, mutation))
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {EVIL_HOST} 127.0.0.1"],
        )
        context = browser.new_context(
            http_credentials={"username": admin[0], "password": admin[1]},
            ignore_https_errors=True,
        )
        page = context.new_page()
        assert page.goto(f"{proxy.url}/server_info").ok  # the administrator is logged in
        runs_before = queue.instance.get_runs_count()
        logged = proxy.access_log.read_text().count("\n")
        page.goto(f"http://{EVIL_HOST}:{site.server_address[1]}/")
        wait_until(lambda: len(page.evaluate("window.results")) == 2, timeout=30)
        results = page.evaluate("window.results")
        time.sleep(2)  # the form's and the frame's requests
        framed = [frame.url for frame in page.frames if frame.url.startswith(proxy.url)]
        browser.close()
        site.shutdown()
    attacks = [
        line.split()
        for line in proxy.access_log.read_text().splitlines()[logged:]
        if "/graphql" in line
    ]
    # the image, the fetch, the form and the WebSocket reached the proxy, and were refused
    assert len(attacks) >= 4, attacks
    assert all(int(status) in REFUSED for _, _, status, *_ in attacks), attacks
    assert results == {"fetch": "sent", "websocket": "refused"}
    assert framed == []  # the UI is not shown in another site's frame
    assert queue.instance.get_runs_count() == runs_before


@pytest.mark.parametrize("open_queue", ["sqlite"], indirect=True)
def test_the_proxy_speaks_tls_hides_its_version_and_slows_password_guessing(
    served, tmp_path, monkeypatch
):
    with proxied(served, tmp_path / "nginx", monkeypatch) as proxy:
        redirect = requests.get(f"{proxy.http_url}/runs", allow_redirects=False, timeout=10)
        assert redirect.status_code == 301
        assert redirect.headers["Location"].startswith("https://")
        answer = requests.get(f"{proxy.url}/server_info", auth=USERS["admins"], timeout=10)
        assert answer.headers["Server"] == "nginx"  # no version
        assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
        with requests.Session() as session:
            guesses = [
                session.get(f"{proxy.url}/", auth=("ops", f"guess {n}"), timeout=10).status_code
                for n in range(300)
            ]
    assert guesses.count(429) > 50 and set(guesses) == {401, 429}


@pytest.mark.parametrize("open_queue", ["sqlite", "postgres"], indirect=True)
def test_bad_parameters_are_refused_before_a_run_is_stored(served, tmp_path, monkeypatch):
    """NaN stored in a run config broke every GraphQL answer listing it; an unknown key (say
    `resources`) was ignored in silence. Both are refused at launch, however the run is made."""
    queue, webserver = served
    images = str(queue.settings.data_dir / "urgent")
    bad = {
        "NaN": detect_config(images, "dumps", score_threshold=math.nan),
        "infinity": detect_config(images, "dumps", score_threshold=math.inf),
        "resources": {
            **detect_config(images, "dumps"),
            "resources": {"folders": {"config": {"roots": ["/"]}}},
        },
        "an integer out of range": detect_config(images, "dumps", batch_size=10**12),
    }
    for name, run_config in bad.items():
        answer = requests.post(
            f"{webserver}/graphql",
            # json.dumps writes NaN and Infinity, as the attacker's client did
            data=json.dumps(
                {
                    "query": "mutation($c: RunConfigData) { launchRun(executionParams: "
                    f'{{selector: {{{SELECTOR}, jobName: "detect"}}, runConfigData: $c}}) '
                    "{ __typename ... on PythonError { message } ... on RunConfigValidationInvalid "
                    "{ errors { message } } } }",
                    "variables": {"c": run_config},
                }
            ),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        # Refused by the run storage: Dagster answers a resolver's exception with a 500
        launched = answer.json()["data"]["launchRun"]
        assert launched["__typename"] == "PythonError", (name, answer.text)
        assert "InputError" in launched["message"], (name, launched)
    assert queue.instance.get_runs_count() == 0
    with pytest.raises(InputError, match="not finite"):  # the same check for every other way
        execute_job(queue.settings, "detect", bad["NaN"], queue.instance)
    # A run stored with a NaN before the check existed: listing runs over GraphQL still works.
    record = queue.submit("detection", {"images": [images], "model": "dumps"})
    run = queue.instance.get_run_by_id(record.dagster_run_id)
    legacy = run._replace(
        run_id=str(uuid.uuid4()),
        run_config=bad["NaN"],
        status=DagsterRunStatus.FAILURE,
        tags={**run.tags, run_tags.RECORD_ID: "999"},
    )
    queue.instance.run_storage.add_run.__wrapped__(legacy)  # past the check, as before it
    listed = cli("--url", webserver, "runs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert 999 in [record["id"] for record in json.loads(listed.stdout)]


@pytest.mark.parametrize("open_queue", ["sqlite"], indirect=True)
def test_inputs_outside_the_data_folders_end_the_run_unread_and_unretried(
    open_queue, trained_model, datasets, tmp_path
):
    """A link out of the data roots inside an image folder: refused on submission; launched
    anyway (as from the UI), the run fails as bad input, not retried, and the file is unread."""
    from detection_pipeline.settings import QueueSettings, RetryPolicy

    retrying = {
        "detection": QueueSettings(priority=10, retry=RetryPolicy(attempts=3, delay_seconds=1))
    }
    queue = open_queue(queues=retrying)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "passwd.png"
    shutil.copy(next((datasets / "unseen" / "images").iterdir()), secret)
    folder = queue.settings.data_dir / "mixed"
    shutil.copytree(datasets / "unseen" / "images", folder)
    os.symlink(secret, folder / "passwd.png")
    bait(secret)
    with pytest.raises(InputError, match="passwd.png is outside the allowed data folders"):
        queue.submit("detection", {"images": [str(folder)], "model": "tiny"})
    run_id = _queue_dagster_run(queue.instance, "detect", detect_config(folder, "tiny"), {})
    record = wait_until(
        lambda: next((r for r in queue.store.list_runs() if run_id in r.dagster_run_ids), None)
    )
    ended = queue.wait(record.id, timeout_seconds=120)
    assert ended.status == "error" and "passwd.png is outside" in ended.error
    assert ended.not_retried == NOT_RETRIED_BAD_INPUT and ended.attempts == 1
    assert not was_read(secret)


EVIL_CONFIG = """_base_ = ["mmdet::_base_/models/retinanet_r50_fpn.py"]
model = dict(backbone=dict(depth=18))
marker = __import__("os").system("touch {marker}")
"""


def test_configs_that_are_programs_are_never_executed(tmp_path, trained_model, datasets):
    """Runs take registered models only; a config that is code is refused when it is
    registered, and by the MMDetection child should one appear in the registry anyway."""
    _, model = trained_model
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    for bad in (
        EVIL_CONFIG.format(marker=marker),
        "import os\n",
        "custom_imports = dict(imports=['os'])\n",
        "_base_ = ['/tmp/elsewhere.py']\n",
        "model = dict(**{'a': 1})\n",
        "x = open('/etc/passwd').read()\n",
    ):
        evil.write_text(bad)
        with pytest.raises(UnsafeConfig):
            check_config(evil)
    check_config(model.config)  # what training writes is plain values

    settings = make_home(tmp_path / "home", input_roots=[datasets], warm_worker=False)
    evil.write_text(EVIL_CONFIG.format(marker=marker))
    with DagsterInstance.ephemeral(tempdir=str(settings.home)) as instance:
        service = RunService(instance, settings)
        with pytest.raises(UnsafeConfig, match="line 3"):
            service.register_model("evil", evil, Path(model.checkpoint), ["rectangle"])
        registered = service.register_model(
            "outside", Path(model.config), Path(model.checkpoint), ["rectangle"]
        )
        assert registered.version == 1
        assert Path(registered.config).parents[1] == settings.models_dir / "outside"
        # a registry file replaced by code later: the MMDetection child refuses to load it
        register_as(service.store, "swapped", model, config=str(evil))
        images = datasets / "unseen" / "images"
        execute_job(
            settings, "detect", detect_config(images, "swapped"), instance, raise_on_error=False
        )
        [record] = service.store.list_runs()
    assert record.status == "error" and "line 3" in record.error, record.error
    assert not marker.exists()


def test_checkpoints_load_as_weights_only(tmp_path, trained_model):
    """A checkpoint is a pickle: one carrying code is refused at registration, unloaded."""
    import torch

    _, model = trained_model
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": Payload()}, evil)
    home = make_home(tmp_path / "home")
    with (
        DagsterInstance.ephemeral(tempdir=str(home.home)) as instance,
        pytest.raises(InputError, match="cannot be loaded as weights alone"),
    ):
        RunService(instance, home).register_model("evil", Path(model.config), evil, ["rectangle"])
    assert not marker.exists()


def test_a_runtime_folder_someone_else_made_is_refused(tmp_path, monkeypatch):
    """Planted in a shared temp dir: world-writable, or a link to elsewhere."""
    planted = tmp_path / "detection-pipeline-0"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(planted))
    with pytest.raises(UnsafeRuntimeDir, match="not this user's alone"):
        runtime_dir()
    link = tmp_path / "link"
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    link.symlink_to(tmp_path / "elsewhere")
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(link))
    with pytest.raises(UnsafeRuntimeDir, match="a link"):
        runtime_dir()
    fresh = tmp_path / "fresh" / "runtime"
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(fresh))
    assert runtime_dir() == fresh and (fresh.stat().st_mode & 0o777) == 0o700


def test_the_home_and_what_it_holds_are_the_users_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert cli("init").returncode == 0
    home = tmp_path / "home"
    for path in (home, home / "data", home / "storage"):
        assert path.stat().st_mode & 0o077 == 0, path
    for path in (home / "dagster.yaml", home / "detection_pipeline.yaml"):
        assert path.stat().st_mode & 0o077 == 0, path


def test_register_model_from_the_command_line(tmp_path, trained_model, monkeypatch):
    _, model = trained_model
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    evil = tmp_path / "evil.py"
    evil.write_text(EVIL_CONFIG.format(marker=tmp_path / "ran"))
    options = ["--checkpoint", model.checkpoint, "--classes", "rectangle"]
    refused = cli("register-model", "evil", "--config", str(evil), *options)
    assert refused.returncode == 1 and "line 3" in refused.stderr
    assert "Traceback" not in refused.stderr
    registered = cli("register-model", "flat", "--config", model.config, *options)
    assert registered.returncode == 0, registered.stderr
    listed = cli("models", "--json")
    [entry] = json.loads(listed.stdout)
    assert (entry["name"], entry["version"], entry["classes"]) == ("flat", 1, ["rectangle"])
    assert not (tmp_path / "ran").exists()
