"""Queue overhead: 10 tiny detection runs through the real queue vs. one plain MMDetection script.

    .venv/bin/python bench/queue_bench.py [--runs 10] [--images 16] [--postgres URL]

Prints, from one run of this script:
- the gap between the end of MMDetection work in run N and its start in run N+1 (median, max);
- total wall time of the queued runs divided by the same detections in one plain script that
  loads the model once (DetInferencer), both measured here.
Writes the figures to bench/results/queue_<time>.json so two commits can be compared.
"""

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dagster import DagsterInstance
from figures import report  # bench/figures.py

from detection_pipeline.dagster_services import running_daemon
from detection_pipeline.datasets.synthetic import make_dataset
from detection_pipeline.detections import DETECTIONS_FILE
from detection_pipeline.instance import use_home, write_instance_config
from detection_pipeline.records.service import RunService
from detection_pipeline.settings import Settings

PLAIN_SCRIPT = """
import sys, time
started = time.monotonic()
from detection_pipeline.mmdet_runner.checkpoints import allow_mmengine_checkpoints
allow_mmengine_checkpoints()
from mmdet.apis import DetInferencer
config, checkpoint, runs, *images = sys.argv[1:]
inferencer = DetInferencer(model=config, weights=checkpoint, device="cpu", show_progress=False)
for _ in range(int(runs)):
    inferencer(images, batch_size=4, no_save_pred=True, no_save_vis=True)
print(time.monotonic() - started)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--postgres", help="PostgreSQL URL of an empty database (default: SQLite)")
    args = parser.parse_args()

    home = use_home(Path(tempfile.mkdtemp(prefix="queue_bench_")))
    write_instance_config(home, args.postgres)
    settings = Settings.load(home)
    make_dataset(settings.data_dir / "train", images=16, seed=0)
    make_dataset(settings.data_dir / "images", images=args.images, seed=1)
    images_dir = settings.data_dir / "images" / "images"

    with (
        DagsterInstance.get() as instance,
        running_daemon(instance, home / "daemon.log"),
    ):
        service = RunService(instance, settings)
        # Accuracy does not matter here: a 2-epoch model detects at the same speed.
        training = {"dataset": str(settings.data_dir / "train"), "name": "bench", "epochs": 2}
        trained = service.wait(service.submit("training", training).id)
        assert trained.status == "success", trained.error
        detection = {"images": [str(images_dir)], "model": "bench"}
        started = time.time()
        submitted = [service.submit("detection", detection) for _ in range(args.runs)]
        records = [service.wait(record.id) for record in submitted]
        queue_seconds = time.time() - started
        assert all(r.status == "success" for r in records), [r.error for r in records]
        model = service.store.find_model("bench")

    work = sorted(
        (d["started_at"], d["finished_at"])
        for d in (json.loads((Path(r.output_dir) / DETECTIONS_FILE).read_text()) for r in records)
    )
    gaps = [next_start - end for (_, end), (next_start, _) in itertools.pairwise(work)]
    images = sorted(str(p) for p in images_dir.iterdir())
    plain_seconds = float(
        subprocess.run(
            [
                sys.executable,
                "-c",
                PLAIN_SCRIPT,
                model.config,
                model.checkpoint,
                str(args.runs),
                *images,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    figures = {
        "storage": "postgres" if args.postgres else "sqlite",
        "runs": args.runs,
        "images_per_run": args.images,
        "gap_median_s": round(statistics.median(gaps), 3),
        "gap_max_s": round(max(gaps), 3),
        "queue_total_s": round(queue_seconds, 2),
        "plain_script_s": round(plain_seconds, 2),
        "queue_over_plain": round(queue_seconds / plain_seconds, 2),
    }
    report("queue", figures)


if __name__ == "__main__":
    main()
