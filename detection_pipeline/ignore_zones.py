"""Ignore zones: areas (a GeoJSON of polygons) where detections are flagged, not dropped.

As in the app this product replaces, a detection whose box touches an ignore zone stays in the
results with `in_ignore_zone: true`, so a user sees what was set aside and why. Zones are in
the CRS their file names (a named-CRS member) or, without one, in the detected image's CRS;
they apply to georeferenced images only.
"""

import dataclasses
import json
from pathlib import Path

from shapely import STRtree
from shapely.geometry import Polygon, shape

from .detections import box_polygon
from .errors import InputError


@dataclasses.dataclass(frozen=True)
class IgnoreZones:
    crs: str | None
    geometries: list[dict]  # GeoJSON geometries, as read


def _crs_name(collection: dict) -> str | None:
    name = collection.get("crs", {}).get("properties", {}).get("name")
    if name and name.startswith("urn:ogc:def:crs:EPSG::"):
        return "EPSG:" + name.rsplit(":", 1)[1]
    return name


def read_ignore_zones(path: Path) -> IgnoreZones:
    """The zones of a GeoJSON file (FeatureCollection, Feature or geometry); raises InputError."""
    try:
        collection = json.loads(Path(path).read_text())
        features = (
            collection["features"]
            if collection.get("type") == "FeatureCollection"
            else [collection if collection.get("type") == "Feature" else {"geometry": collection}]
        )
        geometries = [feature["geometry"] for feature in features]
        for geometry in geometries:
            if shape(geometry).geom_type not in ("Polygon", "MultiPolygon"):
                raise ValueError(f"a {geometry['type']} is not an area")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(
            f"ignore zones {path} are not a GeoJSON of polygons ({error}); fix the file"
        ) from error
    return IgnoreZones(_crs_name(collection), geometries)


def flag_ignored(detections: list[dict], zones: IgnoreZones, crs: str, transform) -> None:
    """Sets `in_ignore_zone` on each detection (in pixels of an image with `crs`, `transform`)."""
    geometries = zones.geometries
    if zones.crs and zones.crs != crs:
        from rasterio.warp import transform_geom  # only the child, which has rasterio, gets here

        geometries = [transform_geom(zones.crs, crs, geometry) for geometry in geometries]
    tree = STRtree([shape(geometry) for geometry in geometries])
    for detection in detections:
        footprint = Polygon(box_polygon(transform, detection["box"]))
        detection["in_ignore_zone"] = bool(len(tree.query(footprint, predicate="intersects")))
