"""The two jobs executed for real in process: tiny MMDetection training and detection."""

import json
from pathlib import Path

from dagster import instance_for_test

from detection_pipeline import run_tags
from detection_pipeline.datasets.recall import recall
from detection_pipeline.definitions import defs
from detection_pipeline.jobs.pipes_messages import PIPES_MESSAGES_FILE
from detection_pipeline.records import record_store

from .conftest import TRAIN_EPOCHS, detect_config, execute_job

# Measured with the tiny model after 30 epochs on 17 training images: 0.88 on unseen images.
MIN_RECALL = 0.7


def test_definitions_wire_both_jobs_with_their_resources():
    for name in ("detect", "train"):
        job = defs.resolve_job_def(name)
        assert {"folders", "runner"} <= set(job.resource_defs)
    assert [node.name for node in defs.resolve_job_def("train").nodes_in_topological_order] == [
        "prepare_dataset",
        "run_mmdetection",
        "collect_outputs",
        "register_model",
        "cleanup",
    ]


def test_training_registers_the_best_checkpoint_with_its_metrics(trained_model):
    settings, model = trained_model
    assert model.name == "tiny" and model.version == 1 and model.classes == ["rectangle"]
    assert Path(model.checkpoint).is_file() and Path(model.config).is_file()
    assert len(model.metrics["epochs"]) == TRAIN_EPOCHS
    assert 1 <= model.metrics["best_epoch"] <= TRAIN_EPOCHS
    run_dir = settings.runs_dir / str(model.training_record_id)
    assert (run_dir / "training_curve.png").stat().st_size > 1000
    assert (run_dir / f"succ_{model.training_record_id}.txt").is_file()
    assert not (run_dir / "staging").exists()
    # only the registry keeps the weights
    assert not list((run_dir / "work").glob("*.pth"))


def test_detection_finds_the_known_objects(trained_model, datasets):
    settings, _ = trained_model
    with instance_for_test(temp_dir=str(settings.home)) as instance:
        store = record_store(instance)
        result = execute_job(
            settings,
            "detect",
            run_config=detect_config(datasets / "unseen" / "images", "tiny"),
            instance=instance,
        )
        assert result.success
        record = next(r for r in store.list_runs() if r.dagster_run_id == result.run_id)
        # launched without a record (as from the UI): the run made its own and tagged itself
        tags = instance.get_run_by_id(result.run_id).tags
        assert tags[run_tags.RECORD_ID] == str(record.id)
        assert tags[run_tags.QUEUE] == "detection"
        # The child's Pipes messages came through the run folder's file, which is gone now.
        logs = " ".join(event.user_message or "" for event in instance.all_logs(result.run_id))
        assert "successfully opened dagster pipes" in logs
    assert record.status == "success" and record.attempts == 1 and record.kind == "detection"
    run_dir = Path(record.output_dir)
    detections = json.loads((run_dir / "detections.json").read_text())
    assert len(detections["images"]) == 16
    assert (
        recall(run_dir / "detections.json", datasets / "unseen" / "annotations.json") >= MIN_RECALL
    )
    coco_results = json.loads((run_dir / "detections_coco.json").read_text())
    assert len(coco_results) == sum(len(image["detections"]) for image in detections["images"])
    assert len(list((run_dir / "vis").glob("*.jpg"))) == 16
    assert (run_dir / f"succ_{record.id}.txt").is_file()
    assert not (run_dir / "staging").exists()  # cleanup removes staged inputs, keeps outputs
    assert not (run_dir / PIPES_MESSAGES_FILE).exists()

    output = next(
        e for e in result.all_events if e.step_key == "collect_outputs" and e.is_successful_output
    )
    metadata = {key: value.value for key, value in output.step_output_data.metadata.items()}
    assert metadata["images"] == 16
    assert metadata["detections"] == sum(len(image["detections"]) for image in detections["images"])
    assert metadata["images/s"] > 0
    assert metadata["per class"] == {"rectangle": metadata["detections"]}
