"""detection-pipeline: set up a Dagster home, start it, submit and follow runs."""

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import click

from .dagster_services import (
    STOP_GRACE_SECONDS,
    DaemonAlreadyRuns,
    DaemonDidNotStart,
    daemon_lock,
    daemon_running,
    running_daemon,
    serve,
    webserver_options,
)
from .datasets.synthetic import make_dataset
from .errors import InputError, NotAllowed
from .instance import dagster_home, use_home, write_instance_config
from .records import RecordNotFound
from .records.schema import Kind, RunRecord, Status, utcnow
from .records.service import RunService
from .remote import RemoteError, RemoteService
from .settings import Settings, SettingsError

DEFAULT_PORT = 3000


def _load_settings(home: Path) -> Settings:
    try:
        return Settings.load(home)
    except SettingsError as error:
        raise click.ClickException(str(error)) from error


def _settings() -> Settings:
    """The Dagster home's settings; the home gets the embedded default (SQLite) on first use."""
    home = use_home(dagster_home())
    if not (home / "dagster.yaml").exists():
        write_instance_config(home)
    settings = _load_settings(home)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


@contextlib.contextmanager
def _service() -> Iterator[RunService]:
    """The runs of the local Dagster home."""
    _refuse_remote()
    from dagster import DagsterInstance

    settings = _settings()
    with _database_errors(settings.home), DagsterInstance.get() as instance:
        yield RunService(instance, settings)


@contextlib.contextmanager
def _database_errors(home: Path) -> Iterator[None]:
    """A database that is down, or busy past every wait, ends the command with what to do, not
    a traceback."""
    import sqlalchemy as sa
    from dagster_postgres.utils import DagsterPostgresException

    try:
        yield
    except (sa.exc.OperationalError, DagsterPostgresException) as error:
        cause = error.__cause__ or error  # Dagster's gives up after retries: its cause says why
        reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()[0]
        raise click.ClickException(
            f"the database of {home} could not be used ({reason}). Check "
            "that it is running (PostgreSQL: the storage URL in dagster.yaml) and try again."
        ) from error


def _remote_url() -> str | None:
    return click.get_current_context().find_root().obj


def _refuse_remote() -> None:
    if url := _remote_url():
        name = click.get_current_context().info_name
        raise click.UsageError(
            f"`{name}` works on a local Dagster home only, not through --url {url}: run it on "
            "the server"
        )


@contextlib.contextmanager
def _runs() -> Iterator[RunService | RemoteService]:
    """The runs of the local Dagster home, or of the webserver given with --url."""
    if url := _remote_url():
        yield RemoteService(url)
    else:
        with _service() as service:
            yield service


def _when(moment: dt.datetime) -> str:
    return f"{moment.astimezone():%Y-%m-%d %H:%M:%S}"


def _next_step(record: RunRecord) -> str:
    """What happens next to a run, or why nothing will."""
    if record.status == Status.WAITING.value and record.run_at:
        if record.attempts:
            return f"attempt {record.attempts + 1} no sooner than {_when(record.run_at)}"
        return f"starts no sooner than {_when(record.run_at)}"
    if record.retry_pending:
        return "failed; the upkeep sensor decides on a retry within seconds"
    if record.not_retried:
        return f"not retried: {record.not_retried}"
    return ""


def _print_record(record: RunRecord, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(record.to_dict(), indent=2))
        return
    click.echo(
        f"run {record.id} ({record.kind}, queue {record.queue}, priority {record.priority}): {record.status}"
    )
    click.echo(f"  attempts: {record.attempts}")
    click.echo(f"  dagster runs: {', '.join(record.dagster_run_ids) or '(none yet)'}")
    click.echo(f"  output folder: {record.output_dir or '(made when the run starts)'}")
    if record.error:
        label = "error" if record.status == Status.ERROR.value else "last attempt's error"
        click.echo(f"  {label}: {record.error}")
    if next_step := _next_step(record):
        click.echo(f"  next: {next_step}")


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Errors meant for the user end the command with their message, not a traceback."""
    try:
        yield
    except (InputError, NotAllowed, RecordNotFound, RemoteError) as error:
        raise click.ClickException(str(error)) from error


def _run_at(delay: float | None, at: dt.datetime | None) -> dt.datetime | None:
    if delay is not None and at is not None:
        raise click.UsageError("give --delay or --at, not both")
    if delay is not None:
        return utcnow() + dt.timedelta(seconds=delay)
    return at.astimezone() if at else None  # a time without zone is local time


def _input_path(path: str) -> str:
    """A path as the run will read it: absolute here for the local home; through --url, a path
    on the server, passed on as given."""
    return path if _remote_url() else str(Path(path).expanduser().resolve())


def _submit_and_report(kind: str, params: dict, queue, priority, key, delay, at, wait, as_json):
    if _remote_url() and (key or delay is not None or at):
        raise click.UsageError(
            "--key, --delay and --at need the server's records: submit on the server, or "
            "without them through --url"
        )
    with _runs() as service, _user_errors():
        if isinstance(service, RemoteService):
            record = service.submit(kind, params, queue=queue, priority=priority)
        else:
            record = service.submit(
                kind, params, queue=queue, priority=priority, key=key, run_at=_run_at(delay, at)
            )
        if isinstance(service, RunService) and not daemon_running(service.settings.home):
            click.echo(
                "no Dagster daemon is running for this home, so nothing will start the run: "
                "run `detection-pipeline up` (in another terminal)",
                err=True,
            )
        if wait:
            if not as_json:
                click.echo(f"run {record.id} submitted; waiting for it to finish…")
            record = service.wait(record.id)
    _print_record(record, as_json)
    if wait and record.status != Status.SUCCESS.value:
        sys.exit(1)


queue_options = [
    click.option(
        "--queue",
        help="Queue to put the run in (default: detection for detect, default for train).",
    ),
    click.option("--priority", type=int, help="Overrides the queue's priority; higher runs first."),
    click.option(
        "--key", help="Idempotency key: submitting the same key again returns the first run."
    ),
    click.option(
        "--delay", type=float, help="Start the run no sooner than this many seconds from now."
    ),
    click.option(
        "--at",
        type=click.DateTime(
            ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
        ),
        help="Start the run no sooner than this local time, e.g. '2026-12-01 22:00'.",
    ),
    click.option(
        "--wait", is_flag=True, help="Block until the run ends; exit 1 unless it succeeded."
    ),
    click.option("--json", "as_json", is_flag=True, help="Print the run's record as JSON."),
]


def with_queue_options(command):
    for option in reversed(queue_options):
        command = option(command)
    return command


@click.group()
@click.option(
    "--url",
    envvar="DETECTION_PIPELINE_URL",
    help="Work through the Dagster webserver at this URL (its GraphQL API) instead of the local "
    "home: http://host:3000, or https://host/prefix behind a proxy, with the login in ~/.netrc "
    "or in DETECTION_PIPELINE_URL=https://user:password@host (a password given here shows in "
    "the process list). detect, train, runs, show, cancel and terminate work this way.",
)
@click.pass_context
def main(ctx, url):
    """MMDetection training and detection as a sequential Dagster job queue.

    Works on the Dagster home in $DAGSTER_HOME (default ~/.detection_pipeline), or with --url
    on a Dagster webserver elsewhere.
    """
    # What the product writes (the home, records, run outputs) is its user's alone.
    os.umask(0o077)
    if url and urllib.parse.urlsplit(url).password and _given_on_command_line(ctx, "url"):
        click.echo(
            "warning: the password in --url is visible to every user of this machine in the "
            "process list; put it in ~/.netrc or DETECTION_PIPELINE_URL instead",
            err=True,
        )
    ctx.obj = url


def _given_on_command_line(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


@main.command()
@click.option(
    "--postgres",
    "postgres_url",
    help="Keep Dagster's storage and the records in this PostgreSQL database (postgresql://user:pass@host:5432/db) instead of SQLite.",
)
@click.option(
    "--input-root",
    "input_roots",
    multiple=True,
    type=click.Path(file_okay=False),
    help="A folder runs may read images and datasets from, besides HOME/data (repeatable).",
)
@click.option(
    "--python", "python_executable", help="Python that runs MMDetection (default: this one)."
)
@click.option(
    "--timeout",
    "timeout_seconds",
    type=int,
    help="Seconds after which a run's MMDetection work is killed.",
)
def init(postgres_url, input_roots, python_executable, timeout_seconds):
    """Write DAGSTER_HOME/dagster.yaml (SQLite by default) and detection_pipeline.yaml."""
    _refuse_remote()
    home = use_home(dagster_home())
    config = write_instance_config(home, postgres_url)
    settings = _load_settings(home)
    changes = {
        "input_roots": tuple(Path(root) for root in input_roots),
        "python_executable": python_executable,
        "timeout_seconds": timeout_seconds,
    }
    settings = settings.model_copy(update={k: v for k, v in changes.items() if v})
    settings_file = settings.save()
    settings = _load_settings(home)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with _service():  # creates or migrates the records tables
        pass
    click.echo(f"Dagster home: {home}\n  instance: {config}\n  settings: {settings_file}")
    click.echo(
        f"  storage: {'PostgreSQL' if postgres_url else 'SQLite in ' + str(home / 'storage')}"
    )
    click.echo(f"  inputs allowed from: {', '.join(map(str, settings.input_roots))}")


HOST_HELP = (
    "Address to listen on. The UI has no login: keep it local unless it is behind an "
    "authenticating proxy (README: who may do what)."
)


@contextlib.contextmanager
def _daemon_lock(home: Path) -> Iterator[int]:
    """The home's daemon lock, waiting a while for a daemon that is stopping (one whose `up` was
    killed stops after it)."""
    try:
        with daemon_lock(home) as lock:
            yield lock
            return
    except DaemonAlreadyRuns:
        click.echo(f"waiting up to {STOP_GRACE_SECONDS} s for the daemon of {home} to stop…")
    try:
        with daemon_lock(home, wait_seconds=STOP_GRACE_SECONDS) as lock:
            yield lock
    except DaemonAlreadyRuns as error:
        raise click.ClickException(str(error)) from error


def _serve(daemon: bool, webserver: list[str] | None = None, url: str = "") -> None:
    """Runs Dagster's daemon, webserver or both for this home (`serve`) until Ctrl-C; a daemon
    only while no other runs for the home (`daemon_lock`)."""
    from dagster import DagsterInstance

    home = _settings().home
    with contextlib.ExitStack() as stack:
        lock = None
        if daemon:
            lock = stack.enter_context(_daemon_lock(home))
        if url:
            click.echo(f"Dagster UI: {url} (home {home}); Ctrl-C stops it")
            sys.stdout.flush()  # before Dagster's own output, also when stdout is a file
        instance = stack.enter_context(DagsterInstance.get())
        serve(instance, daemon_lock=lock, webserver=webserver)


@main.command()
@click.option("--port", default=DEFAULT_PORT, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help=HOST_HELP)
def up(port, host):
    """Start the Dagster webserver and daemon for this home; Ctrl-C stops both."""
    _refuse_remote()
    _serve(daemon=True, webserver=webserver_options(host, port), url=f"http://{host}:{port}")


@main.command()
@click.option("--port", default=DEFAULT_PORT, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help=HOST_HELP)
@click.option(
    "--read-only",
    is_flag=True,
    help="Nothing can be launched, stopped or switched: for people who only watch.",
)
@click.option(
    "--path-prefix", default="", help="Serve under this path, as a proxy forwards it: /dagster."
)
def webserver(port, host, read_only, path_prefix):
    """Start only the Dagster webserver (UI and GraphQL) for this home; Ctrl-C stops it.

    The daemon that runs the queue runs beside it: `up` (once per home), or `daemon`."""
    _refuse_remote()
    _serve(
        daemon=False,
        webserver=webserver_options(host, port, read_only=read_only, path_prefix=path_prefix),
        url=f"http://{host}:{port}{path_prefix}" + (" (read-only)" if read_only else ""),
    )


@main.command()
def daemon():
    """Start only the Dagster daemon for this home (the queue, sensors and schedules); Ctrl-C
    stops it. `up` starts it with the UI."""
    _refuse_remote()
    _serve(daemon=True)


@main.command("make-dataset")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--images", default=24, show_default=True)
@click.option("--size", default=128, show_default=True, help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True)
def make_dataset_command(out, images, size, seed):
    """Write a small synthetic COCO dataset (bright rectangles on noise) to OUT."""
    _refuse_remote()
    annotations = make_dataset(Path(out), images=images, size=size, seed=seed)
    click.echo(
        f"{images} images of {size}x{size} in {Path(out) / 'images'}, annotations {annotations}"
    )


@main.command()
@click.option(
    "--dataset", required=True, help="Dataset folder: annotations.json (COCO) and images/."
)
@click.option("--name", required=True, help="Register the trained model under this name.")
@click.option("--epochs", type=int, help="Training epochs (default 30).")
@click.option("--base-model", help="Fine-tune this registered model (name or name:version).")
@click.option(
    "--frozen-stages",
    type=int,
    help="Backbone stages not trained: -1 none, 0 the stem, N stem and stages 1..N.",
)
@click.option(
    "--learning-rate",
    type=float,
    help="The base config's optimizer's rate (default: its own; a tenth of it to fine-tune).",
)
@with_queue_options
def train(dataset, name, epochs, base_model, frozen_stages, learning_rate, **submission):
    """Submit a training run to the queue."""
    params = {"dataset": _input_path(dataset), "name": name}
    optional = {
        "epochs": epochs,
        "base_model": base_model,
        "frozen_stages": frozen_stages,
        "learning_rate": learning_rate,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    _submit_and_report(Kind.TRAINING.value, params, **submission)


@main.command()
@click.option("--images", required=True, multiple=True, help="Image file or folder (repeatable).")
@click.option("--model", required=True, help="Registered model: name or name:version.")
@click.option(
    "--score-thr", "score_threshold", type=float, help="Minimum score of a detection (default 0.3)."
)
@click.option("--device", help="cpu, cuda or cuda:N (default cpu).")
@click.option("--patch-size", type=int, help="Larger images are cut into patches (default 1280).")
@click.option("--patch-overlap", type=float, help="Overlap of neighbour patches (default 0.25).")
@click.option("--nms-iou", type=float, help="IoU of the NMS merging patches (default 0.25).")
@click.option("--ignore-zones", help="GeoJSON of areas whose detections are flagged.")
@with_queue_options
def detect(images, model, score_threshold, device, ignore_zones, **options):
    """Submit a detection run to the queue."""
    params = {
        "images": [_input_path(image) for image in images],
        "model": model,
    }
    if ignore_zones:
        params["ignore_zones"] = _input_path(ignore_zones)
    slicing = {name: options.pop(name) for name in ("patch_size", "patch_overlap", "nms_iou")}
    optional = {"score_threshold": score_threshold, "device": device, **slicing}
    params.update({k: v for k, v in optional.items() if v is not None})
    _submit_and_report(Kind.DETECTION.value, params, **options)


@main.command()
@click.argument("record_id", type=int)
@click.option(
    "--score-thr", "score_threshold", type=float, required=True, help="The threshold to apply."
)
def export(record_id, score_threshold):
    """Write a detection run's outputs again with another score threshold, without detecting
    again (drawn images excepted)."""
    with _service() as service, _user_errors():
        folder = service.export_detections(record_id, score_threshold)
    click.echo(f"detections at score >= {score_threshold}: {folder}")


@main.command()
@click.option("--status", type=click.Choice([s.value for s in Status]))
@click.option("--queue")
@click.option("--json", "as_json", is_flag=True)
def runs(status, queue, as_json):
    """List runs, oldest first."""
    with _runs() as service, _user_errors():
        records = service.list_runs(status=status, queue=queue)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in records], indent=2))
        return
    click.echo(
        f"{'id':>5}  {'kind':<9} {'status':<10} {'queue':<10} {'model':<16} {'created':<19}  note"
    )
    for r in records:
        note = _next_step(r) if r.status == Status.WAITING.value else (r.error or "")
        created = _when(r.created_at)
        click.echo(
            f"{r.id:>5}  {r.kind:<9} {r.status:<10} {r.queue:<10} {(r.model or ''):<16} {created}  {note[:70]}"
        )


@main.command()
@click.argument("record_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def show(record_id, as_json):
    """Show one run."""
    with _runs() as service, _user_errors():
        record = service.get_run(record_id)
    _print_record(record, as_json)


@main.command()
@click.argument("record_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def cancel(record_id, as_json):
    """Take a waiting run off the queue."""
    with _runs() as service, _user_errors():
        record = service.cancel(record_id)
    _print_record(record, as_json)


@main.command()
@click.argument("record_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def terminate(record_id, as_json):
    """Stop a processing run, MMDetection and all it started included."""
    with _runs() as service, _user_errors():
        record = service.terminate(record_id)
    _print_record(record, as_json)


@main.command()
@click.argument("record_id", type=int)
def delete(record_id):
    """Delete a run that is not processing: its folder, its Dagster runs, its record."""
    with _service() as service, _user_errors():
        service.delete(record_id)
    click.echo(f"run {record_id} deleted")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def models(as_json):
    """List registered models."""
    with _service() as service:
        registered = service.store.list_models()
    if as_json:
        click.echo(json.dumps([m.to_dict() for m in registered], indent=2))
        return
    for m in registered:
        click.echo(
            f"{m.name}:{m.version}  classes {', '.join(m.classes)}  bbox mAP {m.metrics.get('bbox_mAP', 0):.3f}  {m.checkpoint}"
        )


def _ago(timestamp: float | None, now: float) -> str:
    return "never" if timestamp is None else f"{now - timestamp:.0f} s ago"


@main.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json):
    """Daemon heartbeat, queue length per queue, the running run, the last tick of each sensor
    and schedule. Exits 1 when the daemon is not healthy."""
    from .health import health

    with _service() as service:
        report = health(service.instance, service.store, service.settings)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report), indent=2, default=str))
        sys.exit(0 if report.healthy else 1)
    now = time.time()
    if report.daemon_seen:
        click.echo("daemon:")
        for daemon in report.daemons:
            state = "healthy" if daemon.healthy else "NOT HEALTHY"
            heartbeat = _ago(daemon.last_heartbeat_at, now)
            click.echo(f"  {daemon.name:<24} {state:<12} last heartbeat {heartbeat}")
            for error in daemon.errors:
                click.echo(f"    error: {error.splitlines()[0]}")
    else:
        click.echo("daemon: not running; `detection-pipeline up` starts it with the UI")
    click.echo("queues (waiting runs):")
    for queue, count in report.waiting.items():
        later = report.waiting_for_time[queue]
        click.echo(
            f"  {queue:<12} {count}" + (f" ({later} waiting for their time)" if later else "")
        )
    running = ", ".join(f"{r.id} ({r.kind}, queue {r.queue})" for r in report.processing)
    click.echo(f"running: {running or 'nothing'}")
    if report.queued:
        click.echo("next in Dagster's queue, in order:")
    for position, run in enumerate(report.queued, 1):
        record = f"run {run.record_id}" if run.record_id else "(record being made)"
        click.echo(
            f"  {position}. {record} (queue {run.queue}, priority {run.priority}) {run.run_id}"
        )
    click.echo("sensors and schedules:")
    for item in report.instigators:
        state = "on" if item.running else "off"
        tick = _ago(item.last_tick_at, now)
        detail = f": {item.last_tick_status}" if item.last_tick_status else ""
        message = (
            f" ({item.last_tick_message.splitlines()[0][:80]})" if item.last_tick_message else ""
        )
        click.echo(f"  {item.kind:<8} {item.name:<20} {state:<4} last tick {tick}{detail}{message}")
    sys.exit(0 if report.healthy else 1)


@main.command()
@click.option("--port", default=9464, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
def metrics(port, host):
    """Serve Prometheus metrics of the queue at http://HOST:PORT/metrics until Ctrl-C: runs
    waiting per queue and how long, processing runs, ended runs, retries, run durations,
    images/s, daemon health. deploy/ has alert rules and a Grafana dashboard."""
    from prometheus_client import REGISTRY, start_http_server

    from .metrics import QueueCollector

    with _service() as service:
        REGISTRY.register(QueueCollector(service.instance, service.settings))
        server, _ = start_http_server(port, addr=host)
        click.echo(f"metrics: http://{host}:{port}/metrics (home {service.settings.home})")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            server.shutdown()


@main.command("register-model")
@click.argument("name")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Its MMDetection config: one .py of plain values (as mmengine dumps them).",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Its weights (.pth), loadable as weights alone.",
)
@click.option(
    "--classes", required=True, help="Its classes in the model's order, comma-separated: dump,tire."
)
def register_model(name, config, checkpoint, classes):
    """Register a model trained elsewhere as the next version of NAME (runs take models from
    the registry only). Its config must be plain values, not a program, and its checkpoint
    weights alone (docs/security.md says how to get there)."""
    with _service() as service, _user_errors():
        model = service.register_model(name, config, checkpoint, classes.split(","))
    click.echo(f"model {model.name}:{model.version} registered ({model.checkpoint})")


@main.command("delete-model")
@click.argument("name")
def delete_model(name):
    """Delete every version of a registered model, unless a waiting or processing detection run uses it."""
    with _service() as service, _user_errors():
        versions = service.delete_model(name)
    click.echo(f"model {name} deleted ({versions} version{'s' if versions != 1 else ''})")


# Measured on the demo's data with training seeds 0-4: 30 epochs found 56-100 % of the unseen
# rectangles (seed 0, the one used, 56 %), 45 epochs 97-100 %.
DEMO_EPOCHS = 45


@main.command()
@click.option("--epochs", default=DEMO_EPOCHS, show_default=True)
def demo(epochs):
    """Train a tiny detector on synthetic images, then detect with it, through the queue."""
    from .datasets.recall import recall
    from .detections import DETECTIONS_FILE
    from .mmdet_runner.specs import DRAWN_DIR

    with _service() as service:
        data = service.settings.data_dir
        make_dataset(data / "demo-train", images=24, seed=0)
        make_dataset(data / "demo-unseen", images=16, seed=1)
        log_file = service.settings.home / "daemon.log"
        if not daemon_running(service.settings.home):
            click.echo(f"starting the Dagster daemon for this home (its log: {log_file})…")
        try:
            with running_daemon(service.instance, service.settings.home, log_file):
                click.echo(f"training model 'demo' for {epochs} epochs on {data / 'demo-train'}…")
                training = {"dataset": str(data / "demo-train"), "name": "demo", "epochs": epochs}
                _wait_for_success(service, service.submit(Kind.TRAINING.value, training))
                click.echo(f"detecting on {data / 'demo-unseen' / 'images'}…")
                detection = {"images": [str(data / "demo-unseen" / "images")], "model": "demo"}
                detected = _wait_for_success(
                    service, service.submit(Kind.DETECTION.value, detection)
                )
        except DaemonDidNotStart as error:
            raise click.ClickException(str(error)) from error
        output = Path(detected.output_dir)
        found = recall(output / DETECTIONS_FILE, data / "demo-unseen" / "annotations.json")
        metrics = service.store.find_model("demo").metrics
    click.echo(
        f"\nmodel demo: bbox mAP {metrics['bbox_mAP']:.3f} (best epoch {metrics['best_epoch']})"
    )
    click.echo(f"found {found:.0%} of the rectangles in the unseen images (IoU >= 0.5)")
    click.echo(f"detections: {output / DETECTIONS_FILE}\ndrawn images: {output / DRAWN_DIR}")
    # As the user called it: `.venv/bin/detection-pipeline` when the venv is not on PATH.
    cli = "detection-pipeline" if shutil.which("detection-pipeline") == sys.argv[0] else sys.argv[0]
    click.echo(f"see both runs in the UI: `{cli} up`, then http://127.0.0.1:{DEFAULT_PORT}")


def _wait_for_success(service: RunService, record: RunRecord) -> RunRecord:
    record = service.wait(record.id)
    _print_record(record, as_json=False)
    if record.status != Status.SUCCESS.value:
        sys.exit(1)
    return record
