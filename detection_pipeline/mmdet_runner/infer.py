"""Detection in the child process: DetInferencer over the staged images, in batches."""

import json
import time
from pathlib import Path

from mmdet.apis import DetInferencer

from .specs import COCO_RESULTS_FILE, DETECTIONS_FILE, InferSpec


def _image_result(
    image_id: int, path: str, prediction: dict, classes: list[str], threshold: float
) -> dict:
    height, width = prediction["shape"]
    detections = [
        {"box": [round(v, 2) for v in box], "score": round(score, 4), "class": classes[label]}
        for box, score, label in zip(
            prediction["bboxes"], prediction["scores"], prediction["labels"]
        )
        if score >= threshold
    ]
    return {
        "id": image_id,
        "file": Path(path).name,
        "width": width,
        "height": height,
        "detections": detections,
    }


def _coco_results(image: dict, classes: list[str]) -> list[dict]:
    """The image's detections in COCO results format; image ids are those in detections.json."""
    results = []
    for detection in image["detections"]:
        x1, y1, x2, y2 = detection["box"]
        results.append(
            {
                "image_id": image["id"],
                "category_id": classes.index(detection["class"]) + 1,
                "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                "score": detection["score"],
            }
        )
    return results


def infer(spec: InferSpec, device: str, report) -> dict:
    """Writes detections.json, detections_coco.json and drawn images into spec.out_dir."""
    out_dir = Path(spec.out_dir)
    started_at = time.time()  # wall clock: compared across runs by bench/queue_bench.py
    inferencer = DetInferencer(
        model=spec.config, weights=spec.checkpoint, device=device, show_progress=False
    )
    classes = list(inferencer.model.dataset_meta["classes"])
    started = time.monotonic()
    images: list[dict] = []
    for start in range(0, len(spec.images), spec.batch_size):
        batch = spec.images[start : start + spec.batch_size]
        result = inferencer(
            batch,
            batch_size=spec.batch_size,
            pred_score_thr=spec.score_threshold,
            out_dir=str(out_dir),
            no_save_pred=True,
            return_datasamples=True,
        )
        for path, sample in zip(batch, result["predictions"]):
            instances = sample.pred_instances
            prediction = {
                "shape": sample.ori_shape,
                "bboxes": instances.bboxes.tolist(),
                "scores": instances.scores.tolist(),
                "labels": instances.labels.tolist(),
            }
            images.append(
                _image_result(len(images) + 1, path, prediction, classes, spec.score_threshold)
            )
        report(f"detected on {len(images)}/{len(spec.images)} images")
    seconds = time.monotonic() - started
    coco_results = [result for image in images for result in _coco_results(image, classes)]
    (out_dir / DETECTIONS_FILE).write_text(
        json.dumps(
            {
                "classes": classes,
                "score_threshold": spec.score_threshold,
                "seconds": round(seconds, 3),
                "started_at": started_at,
                "finished_at": time.time(),
                "images": images,
            },
            indent=1,
        )
    )
    (out_dir / COCO_RESULTS_FILE).write_text(json.dumps(coco_results))
    return {"images": len(images), "seconds": round(seconds, 3)}
