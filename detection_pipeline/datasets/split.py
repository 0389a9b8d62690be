"""Seeded, reproducible train/validation/test split of a COCO dataset by image."""

import random

from ..errors import InputError


def _subset(coco: dict, image_ids: set) -> dict:
    return {
        **coco,
        "images": [image for image in coco["images"] if image["id"] in image_ids],
        "annotations": [a for a in coco.get("annotations", []) if a["image_id"] in image_ids],
    }


def split_coco(
    coco: dict, val_fraction: float, test_fraction: float, seed: int
) -> tuple[dict, dict, dict]:
    """(train, val, test): every image in exactly one part, at least one in train and in val.

    The test part gets its share only when that leaves the other two their image each."""
    ids = sorted(image["id"] for image in coco["images"])
    if len(ids) < 2:
        raise InputError("a dataset needs at least 2 images to split into training and validation")
    random.Random(seed).shuffle(ids)
    val_count = min(max(1, round(len(ids) * val_fraction)), len(ids) - 1)
    test_count = min(round(len(ids) * test_fraction), len(ids) - 1 - val_count)
    val, test, train = (
        ids[:val_count],
        ids[val_count : val_count + test_count],
        ids[val_count + test_count :],
    )
    return _subset(coco, set(train)), _subset(coco, set(val)), _subset(coco, set(test))
