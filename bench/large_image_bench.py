"""Memory of sliced inference on a huge orthophoto: peak RSS stays that of a small image.

    .venv/bin/python bench/large_image_bench.py [--size 20000] [--small 2000]

Trains a tiny model for 2 epochs, writes a synthetic GeoTIFF of SIZE x SIZE and one of SMALL x
SMALL (RGB, tiled, deflate), detects on each in the MMDetection child process as a detection
run starts it (1280-pixel patches, overlap 0.25), and prints from this one run: each child's
peak RSS, the huge image's size decoded, and the ratios. Writes bench/results/large_image_*.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import report  # bench/figures.py

from detection_pipeline.datasets.split import split_coco
from detection_pipeline.datasets.synthetic import (
    ANNOTATIONS_FILE,
    IMAGES_DIR,
    make_dataset,
    make_large_image,
)
from detection_pipeline.mmdet_runner.specs import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    InferSpec,
    TrainSpec,
    write_spec,
)


def run_child(action: str, spec_path: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of `python -m detection_pipeline.mmdet_runner ACTION SPEC`."""
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "detection_pipeline.mmdet_runner", action, str(spec_path)],
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{action} failed ({child.returncode}); run it by hand: {spec_path}")
    return time.monotonic() - started, usage.ru_maxrss / 1024  # Linux: KiB


def train_tiny(folder: Path) -> tuple[str, str]:
    """(config, checkpoint) of a tiny model: accuracy does not matter for memory."""
    make_dataset(folder / "data", images=16, seed=0)
    coco = json.loads((folder / "data" / ANNOTATIONS_FILE).read_text())
    train, val, _ = split_coco(coco, 0.25, 0.0, seed=0)
    for name, part in (("train", train), ("val", val)):
        (folder / f"{name}.json").write_text(json.dumps(part))
    spec = TrainSpec(
        work_dir=str(folder / "work"),
        images_dir=str(folder / "data" / IMAGES_DIR),
        train_annotations=str(folder / "train.json"),
        val_annotations=str(folder / "val.json"),
        classes=["rectangle"],
        epochs=2,
    )
    run_child("train", write_spec(spec, folder / "train_spec.json"))
    return str(folder / "work" / CONFIG_FILE), str(folder / "work" / CHECKPOINT_FILE)


def detect(folder: Path, model: tuple[str, str], image: Path) -> dict:
    out_dir = folder / image.stem
    out_dir.mkdir()
    spec = InferSpec(
        config=model[0], checkpoint=model[1], images=[str(image)], out_dir=str(out_dir)
    )
    seconds, peak = run_child("infer", write_spec(spec, folder / f"{image.stem}_spec.json"))
    patches = json.loads((out_dir / "detections.json").read_text())["images"][0]["patches"]
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(peak), "patches": patches}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--small", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="large_image_bench_") as tmp:
        folder = Path(tmp)
        model = train_tiny(folder)
        boxes = [[1000, 1000, 1030, 1030]]
        small = make_large_image(folder / "small.tif", args.small, boxes)
        started = time.monotonic()
        huge = make_large_image(folder / "huge.tif", args.size, boxes)
        write_seconds = time.monotonic() - started
        results = {"small": detect(folder, model, small), "huge": detect(folder, model, huge)}
    decoded_mib = args.size * args.size * 3 / 2**20
    figures = {
        "huge_image": f"{args.size}x{args.size} RGB",
        "huge_decoded_mib": round(decoded_mib),
        "huge_write_s": round(write_seconds, 1),
        **{f"{name}_{key}": value for name, r in results.items() for key, value in r.items()},
        "peak_huge_over_small": round(
            results["huge"]["peak_rss_mib"] / results["small"]["peak_rss_mib"], 2
        ),
        "peak_huge_over_decoded": round(results["huge"]["peak_rss_mib"] / decoded_mib, 3),
    }
    report("large_image", figures)


if __name__ == "__main__":
    main()
