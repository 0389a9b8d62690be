"""How many known boxes a detection run found: recall at an IoU threshold.

The demo prints it for the synthetic images it detects on, and the tests assert it.
"""

import json
from pathlib import Path


def iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def recall(detections_file: Path, coco_annotations: Path, iou_threshold: float = 0.5) -> float:
    """Share of the ground-truth boxes in `coco_annotations` matched by a detection.

    Images are matched by file name, so the detections may come from staged copies.
    """
    coco = json.loads(Path(coco_annotations).read_text())
    detected = {
        image["file"]: [d["box"] for d in image["detections"]]
        for image in json.loads(Path(detections_file).read_text())["images"]
    }
    names = {image["id"]: Path(image["file_name"]).name for image in coco["images"]}
    found = 0
    for annotation in coco["annotations"]:
        x, y, w, h = annotation["bbox"]
        truth = [x, y, x + w, y + h]
        boxes = detected.get(names[annotation["image_id"]], [])
        found += any(iou(truth, box) >= iou_threshold for box in boxes)
    return found / len(coco["annotations"]) if coco["annotations"] else 1.0
