"""Dagster's GraphQL API as other programs use it: the examples of docs/graphql.md executed
against a real webserver and daemon, the CLI through --url, and a read-only webserver."""

import json
import re
from pathlib import Path

import pytest
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from detection_pipeline.records.service import TERMINATED

from .conftest import cli, detect_config, hold_mmdetection, serving, wait_until

DOCS = Path(__file__).parents[1] / "docs" / "graphql.md"


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


@pytest.mark.parametrize("open_queue", ["sqlite"], indirect=True)
def test_the_documented_graphql_examples_run(served):
    queue, url = served
    port = url.rsplit(":", 1)[1]
    code = "\n".join(python_blocks(DOCS.read_text())).replace("3000", port)
    exec(compile(code, str(DOCS), "exec"), {})  # noqa: S102 -- the docs assert what they show

    # the records the server keeps agree (they were made in the order the sensor saw the runs)
    records = queue.store.list_runs()
    [training] = [r for r in records if r.kind == "training"]
    [urgent] = [r for r in records if r.priority == 20]
    [first] = [r for r in records if r not in (training, urgent)]
    assert (first.status, first.error, first.not_retried is not None) == ("error", TERMINATED, True)
    assert (training.kind, training.status) == ("training", "cancelled")
    assert (urgent.status, urgent.priority, urgent.queue) == ("success", 20, "detection")


def _json(result) -> dict | list:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("open_queue", ["sqlite"], indirect=True)
def test_the_cli_works_through_the_webserver(served, datasets):
    queue, url = served
    data = queue.settings.data_dir
    remote = ("--url", url)

    done = _json(
        cli(
            *remote,
            "detect",
            "--images",
            str(data / "urgent"),
            "--model",
            "dumps",
            "--wait",
            "--json",
        )
    )
    assert (done["status"], done["queue"], done["priority"]) == ("success", "detection", 10)
    assert done["output_dir"] == str(queue.settings.runs_dir / str(done["id"]))
    assert queue.store.get_run(done["id"]).status == "success"  # the server's own record

    # The next run stays processing (held before its MMDetection starts) until terminated: the
    # CLI's calls below take longer than a fast machine needs to detect on 600 images.
    hold_mmdetection(queue.settings.python_executable)
    running = _json(
        cli(*remote, "detect", "--images", str(data / "photos"), "--model", "dumps", "--json")
    )
    waiting = _json(
        cli(*remote, "train", "--dataset", str(data / "annotated"), "--name", "m", "--json")
    )
    assert waiting["status"] == "waiting" and waiting["queue"] == "default"
    listed = {r["id"]: r for r in _json(cli(*remote, "runs", "--json"))}
    assert set(listed) == {done["id"], running["id"], waiting["id"]}
    refused = cli(*remote, "terminate", str(waiting["id"]))
    assert refused.returncode == 1 and "not processing" in refused.stderr
    cancelled = _json(cli(*remote, "cancel", str(waiting["id"]), "--json"))
    assert cancelled["status"] == "cancelled"

    started = wait_until(
        lambda: (status := queue.store.get_run(running["id"]).status) != "waiting" and status,
        timeout=120,
    )
    assert started == "processing"
    terminated = _json(cli(*remote, "terminate", str(running["id"]), "--json"))
    assert (terminated["status"], terminated["error"]) == ("error", TERMINATED)
    # the server's record follows within a tick of its upkeep sensor
    wait_until(lambda: queue.store.get_run(running["id"]).error == TERMINATED, timeout=30)

    shown = cli(*remote, "show", str(running["id"]))
    assert "terminated by user" in shown.stdout
    assert cli(*remote, "show", "999").returncode == 1
    # what needs the server's files or records is refused, with where to do it
    for command in (
        ("delete", "1"),
        ("models",),
        ("status",),
        ("detect", "--images", "x", "--model", "m", "--delay", "5"),
    ):
        refused = cli(*remote, *command)
        assert refused.returncode == 2 and "on the server" in refused.stderr, refused.stderr
    bad = cli(*remote, "detect", "--images", str(data / "nope"), "--model", "dumps", "--wait")
    assert bad.returncode == 1 and "does not exist" in bad.stdout


@pytest.mark.parametrize("open_queue", ["sqlite"], indirect=True)
def test_a_read_only_webserver_launches_and_stops_nothing(served, datasets):
    queue, _ = served
    record = queue.submit(
        "detection", {"images": [str(datasets / "unseen" / "images")], "model": "dumps"}
    )
    with serving(queue.settings, read_only=True) as read_only:
        client = DagsterGraphQLClient("127.0.0.1", port_number=int(read_only.rsplit(":", 1)[1]))
        with pytest.raises(DagsterGraphQLClientError, match="Unauthorized|permission"):
            client.submit_job_execution(
                "detect", run_config=detect_config(datasets / "unseen" / "images", "dumps")
            )
        with pytest.raises(DagsterGraphQLClientError, match="Unauthorized|permission"):
            client.terminate_run(record.dagster_run_id)
        assert client.get_run_status(record.dagster_run_id)  # but it shows everything
    assert queue.wait(record.id, timeout_seconds=120).status == "success"
