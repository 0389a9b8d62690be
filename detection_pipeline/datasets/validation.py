"""Checks of user inputs (images, COCO datasets, paths) before any work is done on them."""

import dataclasses
import json
import os
from pathlib import Path

from rasterio.errors import RasterioError

from ..errors import InputError
from .rasters import open_raster, unsupported_layout
from .synthetic import ANNOTATIONS_FILE, IMAGES_DIR

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
# How a complete PNG ends: its IEND chunk's type and CRC. Looked for near the end, not at it:
# some writers append a few bytes after it.
PNG_END = b"IEND\xaeB`\x82"
PNG_END_SEARCH_BYTES = 4096
VAL_ANNOTATIONS_FILE = "val.json"
TEST_ANNOTATIONS_FILE = "test.json"
# File times come from the kernel's coarse clock, some milliseconds behind time.time().
FILE_CLOCK_SLACK_SECONDS = 1.0


def confine(path: str | Path, roots: tuple[Path, ...], what: str) -> Path:
    """The real path of `path` (symlinks resolved), refused unless it lies below one of `roots`.
    Every file a run reads passes here before it is opened: a folder's files one by one too,
    since a folder inside the roots may hold links out of them."""
    if "\0" in str(path):
        raise InputError(f"{what} {str(path)!r} holds a NUL character: no file has such a name")
    real = Path(path).expanduser().resolve()
    if not any(real.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise InputError(
            f"{what} {path} is outside the allowed data folders ({allowed}); move it there "
            "or add its folder with `detection-pipeline init --input-root FOLDER`"
        )
    return real


def image_problem(path: Path) -> str | None:
    """What is wrong with an image file, or None when it reads as one.

    Any image opens by its header (rasterio); a PNG must also end in its end chunk, which
    finds a file cut short (an interrupted copy) without reading it all: reading each PNG
    through (Pillow's verify) took longer than opening it, about 40 % of what submitting a
    run of 512x512 PNGs cost. (A JPEG may carry megabytes after its end marker, as phones'
    motion photos do.)"""
    try:
        with open_raster(path) as dataset:
            layout = unsupported_layout(dataset)
        if layout:
            return f"{path.name} ({layout})"
        if path.suffix.lower() == ".png" and PNG_END not in _tail(path):
            return f"{path.name} (cut short: it does not end in PNG's end chunk)"
    except (RasterioError, OSError) as error:
        return f"{path.name} ({error})"
    return None


def _tail(path: Path) -> bytes:
    with path.open("rb") as file:
        file.seek(max(0, file.seek(0, os.SEEK_END) - PNG_END_SEARCH_BYTES))
        return file.read()


def find_images(
    paths: list[str], roots: tuple[Path, ...], checked_at: float | None = None
) -> list[Path]:
    """The image files named by `paths` (files, or folders searched one level deep), all
    verified but those unchanged since `checked_at`, a time when they were."""
    if not paths:
        raise InputError("no images given: name an image folder or image files")
    images: list[Path] = []
    for given in paths:
        path = confine(given, roots, "image path")
        if path.is_dir():
            found = sorted(
                confine(p, roots, "image")
                for p in path.iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise InputError(
                    f"folder {given} has no images ({', '.join(IMAGE_SUFFIXES)}); "
                    "check the path or put the images there"
                )
            images += found
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(
                    f"{given} is not an image file (expected {', '.join(IMAGE_SUFFIXES)})"
                )
            images.append(path)
        else:
            raise InputError(f"image path {given} does not exist; check the path")
    if checked_at is not None:  # ctime: any write, rename or copy over it moves it on
        since = checked_at - FILE_CLOCK_SLACK_SECONDS
        unchecked = [image for image in images if image.stat().st_ctime >= since]
    else:
        unchecked = images
    broken = [problem for problem in map(image_problem, unchecked) if problem]
    if broken:
        raise InputError(
            f"{len(broken)} file(s) are not readable images: {'; '.join(broken[:5])}"
            f"{' …' if len(broken) > 5 else ''}; remove or replace them"
        )
    return images


def _image_file_problem(file_name, images_dir: Path, roots: tuple[Path, ...]) -> str | None:
    """What is wrong with a COCO image's `file_name`: it must name a file below `images_dir`
    (no absolute name, no `..`) whose real path lies in the data folders."""
    if not isinstance(file_name, str) or not file_name:
        return f"image file_name {file_name!r} is not a file name"
    name = Path(file_name)
    if name.is_absolute() or ".." in name.parts:
        return f"image {file_name} is not a name inside {images_dir} (no absolute path or '..')"
    try:
        path = confine(images_dir / name, roots, "image")
    except InputError as error:
        return str(error).split(";")[0]
    if not path.is_file():
        return f"image {file_name} is missing from {images_dir}"
    return None


def _coco_problems(coco: dict, images_dir: Path, roots: tuple[Path, ...]) -> list[str]:
    problems = []
    image_ids = {image["id"] for image in coco.get("images", [])}
    category_ids = {category["id"] for category in coco.get("categories", [])}
    if not image_ids:
        problems.append("it lists no images")
    if not category_ids:
        problems.append("it lists no categories")
    for image in coco.get("images", []):
        if problem := _image_file_problem(image.get("file_name"), images_dir, roots):
            problems.append(problem)
    for annotation in coco.get("annotations", []):
        if annotation.get("image_id") not in image_ids:
            problems.append(
                f"annotation {annotation.get('id')} refers to unknown image {annotation.get('image_id')}"
            )
        if annotation.get("category_id") not in category_ids:
            problems.append(
                f"annotation {annotation.get('id')} refers to unknown category {annotation.get('category_id')}"
            )
        bbox = annotation.get("bbox", [])
        if len(bbox) != 4 or bbox[2] <= 0 or bbox[3] <= 0:
            problems.append(f"annotation {annotation.get('id')} has an invalid bbox {bbox}")
    return problems


def load_coco(path: Path, images_dir: Path, roots: tuple[Path, ...]) -> dict:
    """A COCO annotations file whose images, categories and boxes all check out, every image
    inside `images_dir` and the data folders `roots`."""
    path = confine(path, roots, "COCO annotations")
    try:
        coco = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read COCO annotations {path}: {error}") from error
    if not isinstance(coco, dict):
        raise InputError(f"COCO file {path} holds no JSON object; fix it and submit again")
    problems = _coco_problems(coco, images_dir, roots)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InputError(
            f"COCO file {path} is broken: {'; '.join(problems[:5])}{more}; fix it and submit again"
        )
    return coco


@dataclasses.dataclass(frozen=True)
class DatasetFiles:
    annotations: Path
    images_dir: Path
    val: Path | None  # given validation annotations: the dataset is split already
    test: Path | None


def dataset_files(dataset: str, roots: tuple[Path, ...]) -> DatasetFiles:
    """The files of a dataset folder: annotations.json and images/ (what `make-dataset` writes).

    A folder split already also holds val.json, and may hold test.json, with annotations over
    the same images/ folder; annotations.json is then the training part.
    """
    folder = confine(dataset, roots, "dataset")
    annotations, images_dir = folder / ANNOTATIONS_FILE, folder / IMAGES_DIR
    if not folder.is_dir():
        raise InputError(f"dataset folder {dataset} does not exist; check the path")
    if not annotations.is_file() or not images_dir.is_dir():
        raise InputError(
            f"dataset folder {dataset} needs {ANNOTATIONS_FILE} (COCO) and an {IMAGES_DIR}/ folder; "
            "`detection-pipeline make-dataset` shows the layout"
        )
    val, test = folder / VAL_ANNOTATIONS_FILE, folder / TEST_ANNOTATIONS_FILE
    if test.is_file() and not val.is_file():
        raise InputError(
            f"dataset folder {dataset} has {TEST_ANNOTATIONS_FILE} but no "
            f"{VAL_ANNOTATIONS_FILE}: add one, or remove {TEST_ANNOTATIONS_FILE} to have the "
            "dataset split 70/20/10"
        )
    return DatasetFiles(
        annotations, images_dir, val if val.is_file() else None, test if test.is_file() else None
    )
