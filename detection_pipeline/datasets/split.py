"""Seeded, reproducible train/validation split of a COCO dataset by image."""

import random

from ..errors import InputError


def _subset(coco: dict, image_ids: set) -> dict:
    return {
        **coco,
        "images": [image for image in coco["images"] if image["id"] in image_ids],
        "annotations": [a for a in coco.get("annotations", []) if a["image_id"] in image_ids],
    }


def split_coco(coco: dict, val_fraction: float, seed: int) -> tuple[dict, dict]:
    """(train, val): every image in exactly one part, at least one image in each."""
    ids = sorted(image["id"] for image in coco["images"])
    if len(ids) < 2:
        raise InputError("a dataset needs at least 2 images to split into training and validation")
    random.Random(seed).shuffle(ids)
    val_count = min(max(1, round(len(ids) * val_fraction)), len(ids) - 1)
    return _subset(coco, set(ids[val_count:])), _subset(coco, set(ids[:val_count]))
