"""The deployment's instance config and the embedded default written by `init`."""

from pathlib import Path

import yaml
from dagster import DagsterInstance
from dagster._core.run_coordinator import QueuedRunCoordinator

from detection_pipeline.instance import DEPLOYMENT_CONFIG, instance_config

from .conftest import cli

TOP_LEVEL_CONFIG = Path(__file__).parents[1] / "dagster.yaml"


def test_the_top_level_dagster_yaml_is_the_deployment_config():
    assert TOP_LEVEL_CONFIG.resolve() == DEPLOYMENT_CONFIG.resolve()
    config = yaml.safe_load(DEPLOYMENT_CONFIG.read_text())
    assert config["storage"] == {
        "postgres": {"postgres_url": {"env": "DETECTION_PIPELINE_POSTGRES_URL"}}
    }
    assert config["run_coordinator"]["class"] == "SequentialRunCoordinator"
    assert config["run_coordinator"]["config"]["max_concurrent_runs"] == 1
    assert config["run_monitoring"]["enabled"] is True


def test_init_writes_an_embedded_home_with_the_same_queue(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    result = cli("init")
    assert result.returncode == 0, result.stderr
    written = yaml.safe_load((home / "dagster.yaml").read_text())
    deployment = yaml.safe_load(DEPLOYMENT_CONFIG.read_text())
    assert written["storage"] == {"sqlite": {"base_dir": str(home / "storage")}}
    assert {k: v for k, v in written.items() if k != "storage"} == {
        k: v for k, v in deployment.items() if k != "storage"
    }
    with DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 1
        assert instance.run_coordinator.dequeue_interval_seconds == 0.5
    assert (home / "records.db").exists()
    assert (home / "data").is_dir()


def test_init_with_postgres_keeps_everything_in_that_database(tmp_path, postgres_url, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    result = cli("init", "--postgres", postgres_url)
    assert result.returncode == 0, result.stderr
    assert (
        instance_config(home, postgres_url)["storage"]
        == yaml.safe_load((home / "dagster.yaml").read_text())["storage"]
    )
    assert not (home / "records.db").exists()
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
