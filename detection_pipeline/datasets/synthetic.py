"""Small synthetic COCO datasets: bright rectangles on dark noise.

No dataset or weights can be downloaded where this product runs its tests, so the demo and the
tests make their own data: objects a tiny detector learns in a few epochs on a CPU.
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAME = "rectangle"
ANNOTATIONS_FILE = "annotations.json"
IMAGES_DIR = "images"


def _place_boxes(rng: np.random.Generator, size: int, count: int) -> list[list[int]]:
    """Non-overlapping boxes [x1, y1, x2, y2] with sides between size/6 and size/2.5."""
    boxes: list[list[int]] = []
    for _ in range(count * 20):
        if len(boxes) == count:
            break
        w, h = rng.integers(size // 6, int(size / 2.5), endpoint=True, size=2)
        x1, y1 = rng.integers(0, size - w), rng.integers(0, size - h)
        box = [int(x1), int(y1), int(x1 + w), int(y1 + h)]
        if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in boxes):
            boxes.append(box)
    return boxes


def make_dataset(out_dir: Path, images: int = 24, size: int = 128, seed: int = 0) -> Path:
    """Write `images` PNGs under out_dir/images and their COCO file out_dir/annotations.json.

    Returns the annotations file. The same seed always gives the same dataset.
    """
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    coco: dict = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 1, "name": CLASS_NAME}],
    }
    for image_id in range(1, images + 1):
        pixels = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
        boxes = _place_boxes(rng, size, int(rng.integers(1, 3, endpoint=True)))
        for x1, y1, x2, y2 in boxes:
            pixels[y1:y2, x1:x2] = object_colour(rng)
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        file_name = f"{image_id:05d}.png"
        Image.fromarray(pixels).save(out_dir / IMAGES_DIR / file_name)
        coco["images"].append(
            {"id": image_id, "file_name": file_name, "width": size, "height": size}
        )
    annotations = out_dir / ANNOTATIONS_FILE
    annotations.write_text(json.dumps(coco, indent=1))
    return annotations


def object_colour(rng: np.random.Generator) -> np.ndarray:
    """The colour of a synthetic object: bright, against the dark noise."""
    return rng.integers(190, 256, size=3, dtype=np.uint8)


def make_large_image(
    path: Path,
    size: int,
    boxes: list[list[int]],
    crs: str | None = "EPSG:32633",
    origin: tuple[float, float] = (500000.0, 5000000.0),
    pixel_metres: float = 0.1,
    seed: int = 0,
    band_rows: int = 1024,
    dtype: str = "uint8",
) -> Path:
    """A square GeoTIFF orthophoto of noise with objects at `boxes` (pixels), written a band of
    rows at a time so even a huge one takes little memory. Georeferenced (north up, `origin` the
    top left corner) unless `crs` is None. Boxes must be shorter than `band_rows`. Pixels are
    bytes unless `dtype` says otherwise (what a 16-bit orthophoto looks like to detection)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    colours = [object_colour(rng) for _ in boxes]
    profile = dict(
        driver="GTiff", width=size, height=size, count=3, dtype=dtype, tiled=True,
        blockxsize=256, blockysize=256, compress="deflate",
    )  # fmt: skip
    if crs:
        profile.update(crs=crs, transform=from_origin(*origin, pixel_metres, pixel_metres))
    with rasterio.open(path, "w", **profile) as image:
        for top in range(0, size, band_rows):
            rows = min(band_rows, size - top)
            band = rng.integers(0, 90, size=(rows, size, 3), dtype=np.uint8)
            for (x1, y1, x2, y2), colour in zip(boxes, colours):
                # the part of the box in this band
                band[max(y1, top) - top : max(min(y2, top + rows) - top, 0), x1:x2] = colour
            pixels = band.transpose(2, 0, 1).astype(dtype)
            image.write(pixels, window=Window(0, top, size, rows))
    return path
