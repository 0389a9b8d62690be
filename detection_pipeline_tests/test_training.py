"""Training like the app this product replaces: 70/20/10 split, fine-tuning, best epoch only."""

from pathlib import Path

import pytest
from dagster import instance_for_test
from mmengine.config import Config

from detection_pipeline.datasets.split import split_coco
from detection_pipeline.errors import InputError
from detection_pipeline.jobs.train import TrainConfig, check_training_inputs
from detection_pipeline.mmdet_runner.config_builder import build_train_config
from detection_pipeline.mmdet_runner.specs import BEST_METRIC, TrainSpec
from detection_pipeline.models import model_asset_key
from detection_pipeline.records import record_store
from detection_pipeline.records.service import RunService

from .conftest import execute_job, train_config

EPOCHS = 2


def _coco(images: int) -> dict:
    return {
        "images": [{"id": i, "file_name": f"{i}.png"} for i in range(1, images + 1)],
        "annotations": [{"id": i, "image_id": i} for i in range(1, images + 1)],
        "categories": [{"id": 1, "name": "rectangle"}],
    }


def _ids(part: dict) -> list[int]:
    return [image["id"] for image in part["images"]]


def test_the_split_is_70_20_10_disjoint_and_reproducible():
    parts = split_coco(_coco(50), 0.2, 0.1, seed=3)
    assert [len(part["images"]) for part in parts] == [35, 10, 5]
    assert sorted(i for part in parts for i in _ids(part)) == list(range(1, 51))
    for part in parts:  # annotations follow their images
        assert {a["image_id"] for a in part["annotations"]} == set(_ids(part))
    assert list(map(_ids, split_coco(_coco(50), 0.2, 0.1, seed=3))) == list(map(_ids, parts))
    assert list(map(_ids, split_coco(_coco(50), 0.2, 0.1, seed=4))) != list(map(_ids, parts))
    # a tiny dataset keeps an image for training and one for validation before testing
    assert [len(p["images"]) for p in split_coco(_coco(2), 0.2, 0.1, seed=0)] == [1, 1, 0]


def test_the_training_inputs_are_checked_before_anything_runs(trained_model, datasets):
    settings, _ = trained_model
    with instance_for_test(temp_dir=str(settings.home)) as instance:
        store = record_store(instance)
        roots = settings.input_roots

        def check(**params):
            config = TrainConfig(dataset=str(datasets / "train"), name="m", **params)
            return check_training_inputs(config, store, roots)

        inputs = check(base_model="tiny")
        assert inputs.base.label == "tiny:1"
        assert [len(p["images"]) for p in (inputs.train, inputs.val, inputs.test)] == [17, 5, 2]
        with pytest.raises(InputError, match="unknown model 'nope'"):
            check(base_model="nope")
        with pytest.raises(InputError, match="leave no images for training"):
            check(val_fraction=0.5, test_fraction=0.5)


def _train(settings, dataset: Path, name: str, **extra):
    with instance_for_test(temp_dir=str(settings.home)) as instance:
        result = execute_job(
            settings,
            "train",
            run_config=train_config(dataset, name, EPOCHS, **extra),
            instance=instance,
        )
        assert result.success
        return record_store(instance).find_model(name)


def test_fine_tuning_starts_from_the_base_weights_and_keeps_only_the_best_epoch(
    trained_model, datasets
):
    settings, base = trained_model
    scratch = _train(settings, datasets / "train", "scratch")
    tuned = _train(settings, datasets / "train", "tuned", base_model="tiny", frozen_stages=2)

    first_loss = {m.name: m.metrics["epochs"][0]["loss"] for m in (scratch, tuned)}
    assert first_loss["tuned"] < first_loss["scratch"], first_loss
    # the base's knowledge survives the first epoch (on the same validation images): at the
    # base's full rate a fresh optimizer wrecked it (bbox mAP 0.000-0.52 from the base's 0.68-0.76)
    first_map = tuned.metrics["epochs"][0][BEST_METRIC]
    assert first_map >= 0.8 * base.metrics["bbox_mAP"], (first_map, base.metrics["bbox_mAP"])
    # ... at a tenth of the base's rate (the tiny default's AdamW 0.001) in every epoch; the
    # tuned model's config keeps the base's rate, so tuning it in turn takes a tenth again
    assert [e["lr"] for e in scratch.metrics["epochs"]] == [0.001] * EPOCHS
    assert [e["lr"] for e in tuned.metrics["epochs"]] == pytest.approx([0.0001] * EPOCHS)
    assert tuned.metrics["base_model"] == "tiny:1" and scratch.metrics["base_model"] is None
    config = Config.fromfile(tuned.config)
    assert config.model.backbone.frozen_stages == 2
    assert Path(config.load_from).name == "best.pth"
    assert config.optim_wrapper.optimizer.lr == 0.001

    for model in (scratch, tuned):
        assert 1 <= model.metrics["best_epoch"] <= EPOCHS
        assert "coco/bbox_mAP" in model.metrics["test"]  # the test images' metrics
        # one checkpoint: the best epoch's, in the registry; none left in the run folder
        assert [p.name for p in Path(model.checkpoint).parent.glob("*.pth")] == ["best.pth"]
        run_dir = settings.runs_dir / str(model.training_record_id)
        assert not list(run_dir.rglob("*.pth"))


def test_a_given_learning_rate_is_the_rate_also_when_fine_tuning(trained_model):
    _, base = trained_model
    spec = TrainSpec(
        work_dir="work",
        images_dir="images",
        train_annotations="train.json",
        val_annotations="val.json",
        classes=["rectangle"],
        base_config=base.config,
        load_from=base.checkpoint,
        learning_rate=0.003,
    )
    cfg = build_train_config(spec)
    assert cfg.optim_wrapper.optimizer.lr == 0.003 and cfg.param_scheduler == []


def test_a_trained_model_shows_in_the_catalog_and_its_run_shows_its_curve(trained_model, datasets):
    settings, _ = trained_model
    with instance_for_test(temp_dir=str(settings.home)) as instance:
        result = execute_job(
            settings,
            "train",
            run_config=train_config(datasets / "train", "shown", EPOCHS),
            instance=instance,
        )
        event = instance.get_latest_materialization_event(model_asset_key("shown"))
        metadata = event.asset_materialization.metadata
        assert metadata["model"].value == "shown:1" and metadata["version"].value == 1
        collected = next(
            e.step_output_data.metadata
            for e in result.all_events
            if e.step_key == "collect_outputs" and e.is_successful_output
        )
        curve = collected["training curve"].value
        assert curve.startswith("![training curve](data:image/png;base64,iVBORw0KGgo")
        # each epoch's row: its number, loss, learning rate (from scratch: the tiny's 0.001)
        epochs = collected["epochs"].value.splitlines()
        assert epochs[0] == "| epoch | loss | learning rate | bbox mAP |"
        assert [row.split(" | ")[2] for row in epochs[2:]] == ["0.001"] * EPOCHS

        RunService(instance, settings).delete_model("shown")
        assert instance.get_latest_materialization_event(model_asset_key("shown")) is None
