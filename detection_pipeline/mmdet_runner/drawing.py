"""Drawn images: the kept detections as boxes with class and score on the image (or its overview).

OpenCV draws on the BGR pixels as they are and writes a JPEG in about 1.5 ms for 512x512 (PIL
with its default font and a PNG took 27 ms, longer than detecting on the image)."""

from pathlib import Path

import cv2

from .large_image import Overview

BOX_COLOUR = (40, 40, 255)  # BGR: red
ZONE_COLOUR = (0, 200, 255)  # BGR: amber, detections in an ignore zone
DRAWN_SUFFIX = ".jpg"
DRAWN_QUALITY = 90


def draw_detections(overview: Overview, detections: list[dict], path: Path) -> Path:
    """Draws `detections` (boxes in full-image pixels) on the overview's pixels (in place: the
    overview is not needed after) and saves them as `path` (a JPEG)."""
    image = overview.pixels
    for detection in detections:
        x1, y1, x2, y2 = (round(value / overview.step) for value in detection["box"])
        colour = ZONE_COLOUR if detection.get("in_ignore_zone") else BOX_COLOUR
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        label = f"{detection['class']} {detection['score']:.2f}"
        cv2.putText(
            image, label, (x1 + 2, y1 + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, DRAWN_QUALITY]):
        raise OSError(f"could not write {path}")
    return path
