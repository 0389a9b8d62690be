"""The CLI's run management commands on a home with no daemon (nothing needs to run)."""

import json
import socket
from pathlib import Path

from dagster import DagsterInstance

from detection_pipeline.records import record_store

from .conftest import cli, make_home, register_as


def test_a_delayed_run_can_be_listed_cancelled_and_deleted(
    tmp_path, datasets, trained_model, monkeypatch
):
    model = trained_model[1]
    home = make_home(tmp_path / "home", input_roots=[datasets, Path(model.checkpoint).parent]).home
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    images = str(datasets / "unseen" / "images")
    submitted = cli("detect", "--images", images, "--model", "x", "--delay", "3600")
    assert submitted.returncode == 1 and "unknown model 'x'" in submitted.stderr
    # register the session's model under a name, as a training run would
    with DagsterInstance.from_config(str(home)) as instance:
        register_as(record_store(instance), "m", model)

    submitted = cli("detect", "--images", images, "--model", "m", "--delay", "3600", "--json")
    record = json.loads(submitted.stdout)
    assert record["status"] == "waiting" and record["run_at"] and record["dagster_run_id"] is None
    assert "no Dagster daemon is running" in submitted.stderr

    listed = cli("runs", "--status", "waiting")
    assert "starts no sooner than" in listed.stdout
    refused = cli("terminate", str(record["id"]))
    assert refused.returncode == 1
    assert f"`detection-pipeline cancel {record['id']}` takes it off the queue" in refused.stderr
    assert json.loads(cli("cancel", str(record["id"]), "--json").stdout)["status"] == "cancelled"
    assert cli("delete", str(record["id"])).stdout.strip() == f"run {record['id']} deleted"
    assert json.loads(cli("runs", "--json").stdout) == []
    missing = cli("show", str(record["id"]))
    assert missing.returncode == 1 and f"no run with id {record['id']}" in missing.stderr

    dataset = str(datasets / "train")
    tuning = ("train", "--dataset", dataset, "--name", "t", "--base-model", "m", "--delay", "60")
    submitted = cli(*tuning, "--learning-rate", "0.0005", "--json")
    record = json.loads(submitted.stdout)
    assert record["params"]["learning_rate"] == 0.0005 and record["params"]["base_model"] == "m"
    assert json.loads(cli("cancel", str(record["id"]), "--json").stdout)["status"] == "cancelled"
    assert "model m deleted (1 version)" in cli("delete-model", "m").stdout


def test_a_database_that_is_down_is_said_so_without_a_traceback(tmp_path, monkeypatch):
    """PostgreSQL stopped (here: nothing listens on its port): every command that reads or
    writes runs says the database could not be used and what to check."""
    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = make_home(tmp_path / "home", f"postgresql://postgres@127.0.0.1:{port}/none").home
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for command in (["runs"], ["detect", "--images", str(home / "data"), "--model", "m"]):
        refused = cli(*command)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"the database of {home} could not be used" in refused.stderr
        assert "Connection refused" in refused.stderr and "try again" in refused.stderr
        assert "Traceback" not in refused.stderr
