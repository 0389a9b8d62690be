"""Images of any format and size, opened with rasterio (GDAL): GeoTIFF with its georeference,
PNG and JPEG without one. Opening reads the header only, so checks stay cheap on huge files."""

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from pathlib import Path

import rasterio
from rasterio.errors import NotGeoreferencedWarning

# GDAL caches decoded blocks (5 % of RAM by default); the bands read here are kept anyway.
GDAL_CACHE_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class RasterInfo:
    width: int
    height: int
    # The georeference: a CRS (`EPSG:32633` or WKT) and the affine pixel -> map transform
    # (a, b, c, d, e, f: x = a*col + b*row + c, y = d*col + e*row + f); None without one.
    crs: str | None
    transform: tuple[float, ...] | None


def unsupported_layout(dataset) -> str | None:
    """Why rasterio's `dataset` cannot be detected on, or None."""
    if dataset.count not in (1, 2, 3, 4) or dataset.dtypes[0] != "uint8":
        return (
            f"{dataset.count} band(s) of {dataset.dtypes[0]}: detection needs 8-bit gray or "
            "RGB(A); convert it, e.g. `gdal_translate -ot Byte -scale IN OUT`"
        )
    return None


@contextlib.contextmanager
def open_raster(path: str | Path) -> Iterator:
    """The image opened with rasterio; plain PNG/JPEG open too, without a georeference."""
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as dataset:
            yield dataset


def raster_info(dataset) -> RasterInfo:
    georeferenced = dataset.crs is not None and not dataset.transform.is_identity
    return RasterInfo(
        width=dataset.width,
        height=dataset.height,
        crs=dataset.crs.to_string() if georeferenced else None,
        transform=tuple(dataset.transform)[:6] if georeferenced else None,
    )
