"""Drawn images: the kept detections as boxes with class and score on the image (or its overview)."""

from pathlib import Path

from PIL import Image, ImageDraw

from .large_image import Overview

BOX_COLOUR = (255, 40, 40)
ZONE_COLOUR = (255, 200, 0)  # detections in an ignore zone


def draw_detections(overview: Overview, detections: list[dict], path: Path) -> Path:
    """Draws `detections` (boxes in full-image pixels) on the overview and saves it as `path`."""
    image = Image.fromarray(overview.pixels[:, :, ::-1])  # BGR -> RGB
    draw = ImageDraw.Draw(image)
    for detection in detections:
        x1, y1, x2, y2 = (value / overview.step for value in detection["box"])
        colour = ZONE_COLOUR if detection.get("in_ignore_zone") else BOX_COLOUR
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        draw.text((x1 + 2, y1 + 1), f"{detection['class']} {detection['score']:.2f}", fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
