"""What a detection run writes, and what can be made again from it without detecting again.

Per image, detections.json keeps every detection the model scored (down to its own floor,
e.g. 0.05 for RetinaNet): those at or above the run's score threshold under `detections`, the
rest under `below_threshold`, so a lower threshold can be applied later (`detection-pipeline
export`). Boxes are [x1, y1, x2, y2] in pixels of the original image. A georeferenced image also
gets a GeoJSON FeatureCollection of box polygons in the image's CRS.
"""

import json
import re
from pathlib import Path

DETECTIONS_FILE = "detections.json"
COCO_RESULTS_FILE = "detections_coco.json"
GEOJSON_DIR = "geojson"


def split_by_score(detections: list[dict], threshold: float) -> tuple[list[dict], list[dict]]:
    """(kept, below): detections scoring at least `threshold`, and the others; both by score."""
    ranked = sorted(detections, key=lambda detection: -detection["score"])
    return [d for d in ranked if d["score"] >= threshold], [
        d for d in ranked if d["score"] < threshold
    ]


def rethreshold(detections: dict, threshold: float) -> dict:
    """detections.json's content as if the run had used `threshold`."""
    images = []
    for image in detections["images"]:
        kept, below = split_by_score(image["detections"] + image["below_threshold"], threshold)
        images.append({**image, "detections": kept, "below_threshold": below})
    return {**detections, "score_threshold": threshold, "images": images}


def coco_results(detections: dict) -> list[dict]:
    """The kept detections in COCO results format; image ids are those in detections.json."""
    classes = detections["classes"]
    return [
        {
            "image_id": image["id"],
            "category_id": classes.index(d["class"]) + 1,
            "bbox": [d["box"][0], d["box"][1], *_size(d["box"])],
            "score": d["score"],
        }
        for image in detections["images"]
        for d in image["detections"]
    ]


def _size(box: list[float]) -> list[float]:
    return [round(box[2] - box[0], 2), round(box[3] - box[1], 2)]


def map_point(transform: list[float], x: float, y: float) -> list[float]:
    """Pixel (column x, row y) -> map coordinates through an affine (a, b, c, d, e, f)."""
    a, b, c, d, e, f = transform
    return [a * x + b * y + c, d * x + e * y + f]


def box_polygon(transform: list[float], box: list[float]) -> list[list[float]]:
    """The box's corners on the map, a closed ring."""
    x1, y1, x2, y2 = box
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]
    return [map_point(transform, x, y) for x, y in corners]


def crs_member(crs: str) -> dict:
    """GeoJSON's (2008) named-CRS member, which GDAL and QGIS read: EPSG codes as OGC URNs."""
    epsg = re.fullmatch(r"EPSG:(\d+)", crs)
    return {
        "type": "name",
        "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg.group(1)}" if epsg else crs},
    }


def image_geojson(image: dict, run: dict) -> dict:
    """A FeatureCollection of the image's kept detections as polygons in its CRS.

    `run` (record id, Dagster run id) goes into every feature's properties."""
    features = [
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [box_polygon(image["transform"], d["box"])],
            },
            "properties": {
                "class": d["class"],
                "score": d["score"],
                "image": image["file"],
                **run,
                "pixel_box": d["box"],
                "in_ignore_zone": d.get("in_ignore_zone", False),
            },
        }
        for d in image["detections"]
    ]
    return {
        "type": "FeatureCollection",
        "name": Path(image["file"]).stem,
        "crs": crs_member(image["crs"]),
        "features": features,
    }


def write_outputs(detections: dict, out_dir: Path) -> list[Path]:
    """detections.json, the COCO results, and a GeoJSON per georeferenced image; returns the
    GeoJSON files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # Not indented: json's C encoder takes no indent, and its Python one took 0.1-0.2 s of a
    # 200-image run between the work and the next run. `python -m json.tool` shows it indented.
    (out_dir / DETECTIONS_FILE).write_text(json.dumps(detections))
    (out_dir / COCO_RESULTS_FILE).write_text(json.dumps(coco_results(detections)))
    run = {"record_id": detections.get("record_id"), "run_id": detections.get("run_id")}
    written = []
    for image in detections["images"]:
        if image["crs"] is None:
            continue
        path = out_dir / GEOJSON_DIR / f"{Path(image['file']).stem}.geojson"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(image_geojson(image, run)))
        written.append(path)
    return written
