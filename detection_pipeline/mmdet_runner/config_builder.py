"""Turns a TrainSpec into a complete mmengine config for the tiny (or any RetinaNet-style) model."""

from mmengine.config import Config

from .safe_config import check_config
from .specs import BEST_METRIC, TrainSpec

FINE_TUNING_RATE_FACTOR = 0.1


def _pipelines(image_size: int) -> tuple[list[dict], list[dict]]:
    scale = (image_size, image_size)
    train = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True),
        dict(type="Resize", scale=scale, keep_ratio=True),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PackDetInputs"),
    ]
    test = [
        dict(type="LoadImageFromFile"),
        dict(type="Resize", scale=scale, keep_ratio=True),
        dict(type="LoadAnnotations", with_bbox=True),
        dict(
            type="PackDetInputs",
            meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"),
        ),
    ]
    return train, test


def _dataloader(spec: TrainSpec, annotations: str, pipeline: list[dict], train: bool) -> dict:
    return dict(
        batch_size=spec.batch_size if train else 1,
        # Workers would be processes outside the child's control; the data here is small.
        num_workers=0,
        persistent_workers=False,
        sampler=dict(type="DefaultSampler", shuffle=train),
        dataset=dict(
            type="CocoDataset",
            data_root="",
            ann_file=annotations,
            data_prefix=dict(img=spec.images_dir + "/"),
            metainfo=dict(classes=tuple(spec.classes)),
            filter_cfg=dict(filter_empty_gt=train, min_size=1),
            test_mode=not train,
            pipeline=pipeline,
        ),
    )


def _rate_schedule(spec: TrainSpec) -> list[dict]:
    """A constant rate (the short schedules here have no room for warmup); fine-tuning without
    a given rate runs at a tenth of the base's.

    At the base's own rate a fresh optimizer throws trained weights away in its first steps
    (AdamW's first updates are the full rate on every weight): measured on the tiny model,
    fine-tuning's first epoch ended at 2-9x the base's last loss with up to all of its bbox
    mAP gone, where a tenth of the rate went on improving it. The tenth is a scheduler factor
    rather than a lower rate in the config, so fine-tuning a fine-tuned model does not take a
    tenth of a tenth."""
    if spec.load_from and spec.learning_rate is None:
        # ConstantLR gives the full rate back at the step before its `end` (mmengine's default
        # end is the last epoch): one past it keeps the factor for every epoch.
        return [
            dict(
                type="ConstantLR",
                factor=FINE_TUNING_RATE_FACTOR,
                by_epoch=True,
                begin=0,
                end=spec.epochs + 1,
            )
        ]
    return []


def build_train_config(spec: TrainSpec) -> Config:
    """The base config (the tiny default, or a base model's) set up for this run's data.

    A base model's weights come in through `load_from`; heads whose shape changes with the
    number of classes start fresh (mmengine loads what fits and names the rest in the log)."""
    cfg = Config.fromfile(check_config(spec.base_config))
    train_pipeline, test_pipeline = _pipelines(spec.image_size)
    cfg.model.bbox_head.num_classes = len(spec.classes)
    if spec.frozen_stages is not None:
        cfg.model.backbone.frozen_stages = spec.frozen_stages
    cfg.load_from = spec.load_from or None
    cfg.resume = False
    cfg.work_dir = spec.work_dir
    cfg.randomness = dict(seed=spec.seed)
    cfg.train_dataloader = _dataloader(spec, spec.train_annotations, train_pipeline, train=True)
    cfg.val_dataloader = _dataloader(spec, spec.val_annotations, test_pipeline, train=False)
    cfg.val_evaluator = dict(type="CocoMetric", ann_file=spec.val_annotations, metric="bbox")
    # Inference (DetInferencer) takes its pipeline from the test dataloader, so there is one
    # even without test images.
    test_annotations = spec.test_annotations or spec.val_annotations
    cfg.test_dataloader = _dataloader(spec, test_annotations, test_pipeline, train=False)
    cfg.test_evaluator = dict(type="CocoMetric", ann_file=test_annotations, metric="bbox")
    cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=spec.epochs, val_interval=1)
    cfg.val_cfg = dict(type="ValLoop")
    cfg.test_cfg = dict(type="TestLoop")
    # The optimizer is the base config's (AdamW for the tiny default; a base model's own);
    # a given learning rate overrides its rate.
    if spec.learning_rate is not None:
        cfg.optim_wrapper.optimizer.lr = spec.learning_rate
    cfg.param_scheduler = _rate_schedule(spec)
    cfg.default_hooks.logger.interval = 10
    # Only the best epoch's weights are kept: no periodic or last checkpoints, and the hook
    # replaces the previous best when an epoch beats it.
    cfg.default_hooks.checkpoint = dict(
        type="CheckpointHook",
        interval=-1,
        save_last=False,
        save_best=BEST_METRIC,
        rule="greater",
    )
    return cfg
