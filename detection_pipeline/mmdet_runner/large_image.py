"""Reading an image of any size as overlapping patches, never more than a row of them at once.

rasterio (GDAL) reads GeoTIFF, PNG and JPEG by window, with the georeference when there is one;
SAHI places the patches. Patches are read a row band at a time (full width, one patch high):
formats stored by line (PNG, JPEG, striped TIFF) decode forward only, so reading patch by patch
would decode the image again for every patch, and a band of a tiled GeoTIFF costs no more.
"""

import dataclasses
import itertools
import math
from collections.abc import Iterator

import cv2
import numpy as np
from rasterio.windows import Window
from sahi.slicing import get_slice_bboxes

# Drawn images of large inputs are overviews: their longer side at most this many pixels.
OVERVIEW_MAX_SIDE = 2048


@dataclasses.dataclass(frozen=True)
class Patch:
    offset: tuple[int, int]  # (x, y) of its top left corner in the image
    pixels: np.ndarray  # height x width x 3, BGR (what MMDetection reads from files)


def patch_windows(
    width: int, height: int, patch_size: int, overlap: float
) -> list[tuple[int, int, int, int]]:
    """Patches (x1, y1, x2, y2) covering the image, row by row; one when the image fits in one."""
    return [
        tuple(window)
        for window in get_slice_bboxes(
            image_height=height,
            image_width=width,
            slice_height=patch_size,
            slice_width=patch_size,
            auto_slice_resolution=False,
            overlap_height_ratio=overlap,
            overlap_width_ratio=overlap,
        )
    ]


def _as_bgr(band: np.ndarray) -> np.ndarray:
    """bands x height x width from rasterio -> height x width x 3 BGR; gray is repeated.
    OpenCV interleaves the planes in 0.05 ms for 512x512; numpy's transposed copy took 1.9 ms,
    about 5 % of the CPU a 512x512 image takes through the tiny model (37 ms on one thread)."""
    planes = [band[2], band[1], band[0]] if band.shape[0] >= 3 else [band[0]] * 3
    return cv2.merge(planes)


class Overview:
    """A drawn-image background built from the bands as they pass: every `step`-th pixel."""

    def __init__(self, width: int, height: int):
        self.step = max(1, math.ceil(max(width, height) / OVERVIEW_MAX_SIDE))
        self.shape = (math.ceil(height / self.step), math.ceil(width / self.step), 3)
        self.pixels: np.ndarray | None = None

    def add_band(self, top: int, band_bgr: np.ndarray) -> None:
        if self.step == 1 and band_bgr.shape == self.shape:
            self.pixels = band_bgr  # the whole image in one band (most images): no copy
            return
        if self.pixels is None:
            self.pixels = np.zeros(self.shape, np.uint8)
        first_row = -top % self.step  # the band's first row that falls on the overview grid
        rows = band_bgr[first_row :: self.step, :: self.step]
        start = (top + first_row) // self.step
        self.pixels[start : start + rows.shape[0]] = rows


def iter_patches(
    dataset, windows: list[tuple[int, int, int, int]], overview: Overview
) -> Iterator[Patch]:
    """The windows' pixels, read one row band at a time; each band also goes to `overview`."""
    indexes = [1, 2, 3] if dataset.count >= 3 else [1]
    for (top, bottom), row in itertools.groupby(windows, key=lambda w: (w[1], w[3])):
        band = _as_bgr(dataset.read(indexes, window=Window(0, top, dataset.width, bottom - top)))
        overview.add_band(top, band)
        for x1, _, x2, _ in row:
            yield Patch((x1, top), band[:, x1:x2])
