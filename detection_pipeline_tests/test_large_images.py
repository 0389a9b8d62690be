"""Large orthophotos: sliced inference, merging across patch borders, georeferenced outputs."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
from dagster import instance_for_test
from PIL import Image
from rasterio.transform import from_origin

from detection_pipeline.datasets.rasters import open_raster, raster_info
from detection_pipeline.datasets.recall import iou
from detection_pipeline.datasets.synthetic import make_large_image, object_colour
from detection_pipeline.detections import image_geojson, rethreshold
from detection_pipeline.ignore_zones import flag_ignored, read_ignore_zones
from detection_pipeline.mmdet_runner.large_image import Overview, iter_patches, patch_windows
from detection_pipeline.records import record_store
from detection_pipeline.records.service import RunService

from .conftest import detect_config, execute_job

# The tiny model sees 128-pixel images, so its patches are that size here (1280 by default).
PATCH, OVERLAP = 128, 0.25
STRIDE = PATCH - int(PATCH * OVERLAP)
SIZE = 3000
ORIGIN, PIXEL_METRES = (500000.0, 5000000.0), 0.1


def _objects(rng: np.random.Generator, size: int) -> list[list[int]]:
    """One object of 24-32 pixels a side in each 200-pixel cell, anywhere in it: most cross a
    patch border (there is one every 32 or 64 pixels)."""
    boxes = []
    for top in range(0, size - 200 + 1, 200):
        for left in range(0, size - 200 + 1, 200):
            w, h = rng.integers(24, 33, size=2)
            x, y = left + rng.integers(10, 200 - w - 10), top + rng.integers(10, 200 - h - 10)
            boxes.append([int(x), int(y), int(x + w), int(y + h)])
    return boxes


def _crosses_a_border(box: list[int], windows) -> bool:
    """Whether the edge of some patch cuts the box."""
    return any(
        box[0] < x1 < box[2] or box[0] < x2 < box[2] or box[1] < y1 < box[3] or box[1] < y2 < box[3]
        for x1, y1, x2, y2 in windows
    )


@pytest.fixture(scope="module")
def orthophoto(datasets) -> tuple[Path, list[list[int]]]:
    boxes = _objects(np.random.default_rng(7), SIZE)
    folder = datasets / "orthophotos"
    folder.mkdir(exist_ok=True)
    path = make_large_image(
        folder / "ortho.tif", SIZE, boxes, origin=ORIGIN, pixel_metres=PIXEL_METRES
    )
    return path, boxes


@pytest.fixture(scope="module")
def big_png(datasets) -> tuple[Path, list[list[int]]]:
    """A plain picture larger than a patch: no georeference."""
    boxes = _objects(np.random.default_rng(8), 1000)
    rng = np.random.default_rng(8)
    pixels = rng.integers(0, 90, size=(1000, 1000, 3), dtype=np.uint8)
    for x1, y1, x2, y2 in boxes:
        pixels[y1:y2, x1:x2] = object_colour(rng)
    path = datasets / "orthophotos" / "photo.png"
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path, boxes


def test_patches_cover_the_image_and_match_a_whole_read(tmp_path):
    boxes = [[0, 0, 30, 30], [290, 170, 300, 200]]
    path = make_large_image(tmp_path / "small.tif", 300, boxes, crs=None, band_rows=64)
    windows = patch_windows(300, 300, 128, 0.25)
    assert len(windows) == 9 and windows[-1] == (172, 172, 300, 300)
    assert patch_windows(100, 90, 128, 0.25) == [(0, 0, 100, 90)]  # small: one patch
    with open_raster(path) as dataset:
        whole = dataset.read().transpose(1, 2, 0)[:, :, ::-1]
        overview = Overview(dataset.width, dataset.height)
        patches = list(iter_patches(dataset, windows, overview))
        assert raster_info(dataset).crs is None
    for (x1, y1, x2, y2), patch in zip(windows, patches):
        assert patch.offset == (x1, y1)
        assert np.array_equal(patch.pixels, whole[y1:y2, x1:x2])
    assert np.array_equal(overview.pixels, whole)  # small enough to be its own overview


def test_a_gray_image_is_read_as_its_gray_in_all_three_channels(tmp_path):
    gray = np.random.default_rng(3).integers(0, 255, size=(90, 100), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    with open_raster(tmp_path / "gray.png") as dataset:
        [patch] = iter_patches(dataset, [(0, 0, 100, 90)], Overview(100, 90))
    assert np.array_equal(patch.pixels, np.dstack([gray] * 3))


def test_geojson_polygons_are_the_boxes_mapped_through_the_transform():
    transform = from_origin(*ORIGIN, PIXEL_METRES, PIXEL_METRES)
    image = {
        "file": "ortho.tif",
        "crs": "EPSG:32633",
        "transform": list(transform)[:6],
        "detections": [{"box": [10.0, 20.0, 40.5, 60.0], "score": 0.9, "class": "dump"}],
    }
    collection = image_geojson(image, {"record_id": 3, "run_id": "abc"})
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    feature = collection["features"][0]
    ring = feature["geometry"]["coordinates"][0]
    expected = [transform @ corner for corner in [(10, 20), (40.5, 20), (40.5, 60), (10, 60)]]
    assert np.allclose(ring[:4], expected) and ring[0] == ring[-1]
    assert ring[0] == [ORIGIN[0] + 1.0, ORIGIN[1] - 2.0]
    assert {"class": "dump", "score": 0.9, "record_id": 3}.items() <= feature["properties"].items()


def test_a_lower_threshold_later_brings_back_what_the_run_set_aside():
    detections = {
        "classes": ["dump"],
        "score_threshold": 0.5,
        "images": [
            {
                "id": 1,
                "detections": [{"box": [0, 0, 1, 1], "score": 0.8, "class": "dump"}],
                "below_threshold": [{"box": [2, 2, 3, 3], "score": 0.2, "class": "dump"}],
            }
        ],
    }
    lower = rethreshold(detections, 0.1)["images"][0]
    assert [d["score"] for d in lower["detections"]] == [0.8, 0.2] and not lower["below_threshold"]
    higher = rethreshold(detections, 0.9)["images"][0]
    assert not higher["detections"] and len(higher["below_threshold"]) == 2


def test_ignore_zones_flag_detections_in_the_zones_own_crs(tmp_path):
    transform = list(from_origin(*ORIGIN, PIXEL_METRES, PIXEL_METRES))[:6]
    # A zone over pixels 0-100 x 0-100, given in WGS84: it must be moved into UTM 33N.
    utm = [[ORIGIN[0], ORIGIN[1]], [ORIGIN[0] + 10, ORIGIN[1]], [ORIGIN[0] + 10, ORIGIN[1] - 10]]
    lonlat = rasterio.warp.transform_geom(
        "EPSG:32633", "EPSG:4326", {"type": "Polygon", "coordinates": [[*utm, utm[0]]]}
    )
    zones_file = tmp_path / "zones.geojson"
    zones_file.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4326"}},
                "features": [{"type": "Feature", "geometry": lonlat, "properties": {}}],
            }
        )
    )
    detections = [{"box": [90, 10, 95, 20]}, {"box": [150, 150, 160, 160]}]
    flag_ignored(detections, read_ignore_zones(zones_file), "EPSG:32633", transform)
    assert [d["in_ignore_zone"] for d in detections] == [True, False]


def _detect(settings, images, **extra):
    with instance_for_test(temp_dir=str(settings.home)) as instance:
        result = execute_job(
            settings,
            "detect",
            run_config=detect_config(images, "tiny", **extra),
            instance=instance,
        )
        assert result.success
        record = next(
            r for r in record_store(instance).list_runs() if r.dagster_run_id == result.run_id
        )
    return result, Path(record.output_dir), record


def _found(truth: list[list[int]], image: dict) -> tuple[float, list[int]]:
    """(recall at IoU 0.5, how many detections are centred on each object)."""
    boxes = [d["box"] for d in image["detections"]]

    def centred_on(box):
        return sum(
            box[0] <= (b[0] + b[2]) / 2 <= box[2] and box[1] <= (b[1] + b[3]) / 2 <= box[3]
            for b in boxes
        )

    found = [box for box in truth if any(iou(box, b) >= 0.5 for b in boxes)]
    return len(found) / len(truth), [centred_on(box) for box in truth]


def test_objects_on_patch_borders_are_found_once_and_mapped_onto_the_map(
    trained_model, orthophoto, big_png
):
    settings, _ = trained_model
    (path, truth), (png, png_truth) = orthophoto, big_png
    windows = patch_windows(SIZE, SIZE, PATCH, OVERLAP)
    on_borders = [box for box in truth if _crosses_a_border(box, windows)]
    assert len(on_borders) > len(truth) / 2

    # An ignore zone over the image's top left 1000 x 1000 pixels, in its CRS (no crs member).
    west, north, side = *ORIGIN, 1000 * PIXEL_METRES
    corners = [
        [west, north],
        [west + side, north],
        [west + side, north - side],
        [west, north - side],
    ]
    zones = path.parent / "zones.geojson"
    zones.write_text(json.dumps({"type": "Polygon", "coordinates": [[*corners, corners[0]]]}))

    result, run_dir, record = _detect(
        settings,
        [str(path), str(png)],
        patch_size=PATCH,
        patch_overlap=OVERLAP,
        ignore_zones=str(zones),
    )
    ortho, photo = json.loads((run_dir / "detections.json").read_text())["images"]
    assert ortho["patches"] == len(windows) and ortho["crs"] == "EPSG:32633"
    # Measured: every object found exactly once, nothing else; recall at IoU 0.5 is 0.79 (0.81
    # on borders) because the tiny model's boxes are loose: all are found at IoU 0.3.
    for objects, image in ((truth, ortho), (on_borders, ortho), (png_truth, photo)):
        recall, detections_on = _found(objects, image)
        assert recall >= 0.6
        assert max(detections_on) == 1, "an object was reported more than once"
        assert detections_on.count(1) >= 0.95 * len(objects)
    assert len(ortho["detections"]) <= len(truth) + 2  # hardly anything that is not there
    assert photo["crs"] is None and photo["patches"] == 121
    for detection in ortho["detections"]:
        x1, y1, _, _ = detection["box"]
        assert detection["in_ignore_zone"] == (x1 <= 1000 and y1 <= 1000)
    assert not any(d.get("in_ignore_zone") for d in photo["detections"])  # no georeference

    collection = json.loads((run_dir / "geojson" / "ortho.geojson").read_text())
    assert [p.name for p in (run_dir / "geojson").iterdir()] == ["ortho.geojson"]
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    assert len(collection["features"]) == len(ortho["detections"])
    with rasterio.open(path) as dataset:
        transform = dataset.transform
    for feature in collection["features"]:
        x1, y1, x2, y2 = feature["properties"]["pixel_box"]
        ring = feature["geometry"]["coordinates"][0]
        assert np.allclose([ring[0], ring[2]], [transform @ (x1, y1), transform @ (x2, y2)])
        assert feature["properties"]["run_id"] == result.run_id
        assert feature["properties"]["record_id"] == record.id
        assert feature["properties"]["image"] == "ortho.tif"

    log = (run_dir / f"succ_{record.id}.txt").read_text()
    assert "ortho.tif: " in log and f"/{len(windows)} patches" in log
    with open_raster(run_dir / "vis" / "ortho.jpg") as drawn:
        assert (drawn.width, drawn.height) == (1500, 1500)  # an overview, every 2nd pixel

    # a lower threshold later, without detecting again
    with instance_for_test(temp_dir=str(settings.home)) as instance:
        lower = RunService(instance, settings).export_detections(record.id, 0.05)
    assert lower == run_dir / "threshold_0.05"
    exported = json.loads((lower / "detections.json").read_text())["images"][0]
    assert len(exported["detections"]) == len(ortho["detections"]) + len(ortho["below_threshold"])
    features = json.loads((lower / "geojson" / "ortho.geojson").read_text())["features"]
    assert len(features) == len(exported["detections"])


def test_patch_results_merge_even_when_no_patch_found_anything():
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from detection_pipeline.datasets.rasters import RasterInfo
    from detection_pipeline.mmdet_runner.infer import ImageWork, merged_instances

    def patch_result(boxes: list[list[float]]) -> DetDataSample:
        instances = InstanceData(
            bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            scores=torch.full((len(boxes),), 0.9),
            labels=torch.zeros(len(boxes), dtype=torch.long),
        )
        return DetDataSample(pred_instances=instances)

    windows = patch_windows(300, 300, 128, 0.25)
    work = ImageWork(1, Path("x.tif"), RasterInfo(300, 300, None, None), windows, Overview(3, 3))
    work.results = [((x1, y1), patch_result([])) for x1, y1, _, _ in windows]
    assert len(merged_instances(work, 0.25)) == 0
    # the same object seen from two patches: once, in image coordinates
    work.results[0] = ((0, 0), patch_result([[100, 10, 120, 30]]))
    work.results[1] = ((96, 0), patch_result([[4, 10, 24, 30]]))
    assert merged_instances(work, 0.25).bboxes.tolist() == [[100, 10, 120, 30]]
