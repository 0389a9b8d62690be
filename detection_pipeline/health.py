"""How the deployment is doing: what `detection-pipeline status` prints. The daemon's health is
what the Dagster UI shows on its Deployment page; the rest comes from the records and from the
sensors' and schedules' ticks in Dagster's storage."""

import collections
import dataclasses
import datetime as dt

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.scheduler.instigation import InstigatorStatus

from . import run_tags
from .records.schema import RunRecord, Status, utcnow
from .records.store import RecordStore
from .settings import Settings


@dataclasses.dataclass(frozen=True)
class DaemonHealth:
    name: str
    healthy: bool
    # When the daemon last reported in (epoch seconds); None when it never did.
    last_heartbeat_at: float | None
    errors: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class InstigatorHealth:
    """A sensor or schedule and its last tick."""

    name: str
    kind: str  # sensor or schedule
    running: bool
    last_tick_at: float | None
    last_tick_status: str | None
    last_tick_message: str | None


@dataclasses.dataclass(frozen=True)
class QueuedRun:
    """A run in Dagster's queue; its record id is None until the upkeep sensor gives
    it one."""

    run_id: str
    record_id: int | None
    queue: str | None
    priority: int


@dataclasses.dataclass(frozen=True)
class Health:
    daemons: list[DaemonHealth]
    # Waiting runs per queue (every configured queue, empty ones too), and how many of them
    # wait for a time (a delay, or the next try) rather than for their turn.
    waiting: dict[str, int]
    waiting_for_time: dict[str, int]
    # Seconds the run that has waited longest for its turn has waited, per queue (a delayed
    # run or a retry waits from its time on; 0 for an empty queue).
    longest_wait: dict[str, float]
    processing: list[RunRecord]
    # Dagster's queue, next first: what the Dagster UI's Queued tab lists by time.
    queued: list[QueuedRun]
    instigators: list[InstigatorHealth]

    @property
    def healthy(self) -> bool:
        return bool(self.daemons) and all(daemon.healthy for daemon in self.daemons)

    @property
    def daemon_seen(self) -> bool:
        return any(daemon.last_heartbeat_at is not None for daemon in self.daemons)


def _daemons(instance: DagsterInstance) -> list[DaemonHealth]:
    return [
        DaemonHealth(
            name=name,
            healthy=status.healthy,
            last_heartbeat_at=status.last_heartbeat.timestamp if status.last_heartbeat else None,
            errors=tuple(error.message.strip() for error in (status.last_heartbeat.errors or []))
            if status.last_heartbeat
            else (),
        )
        for name, status in sorted(instance.get_daemon_statuses().items())
    ]


def _tick_message(tick) -> str | None:
    if tick.error:
        return tick.error.message.strip()
    if tick.skip_reason:
        return tick.skip_reason
    return f"{len(tick.run_ids)} run(s) requested" if tick.run_ids else None


def _instigators(instance: DagsterInstance, settings: Settings) -> list[InstigatorHealth]:
    """The sensors and schedules this code location declares, each with its state and last
    tick. Stored states of ones it no longer declares (a sensor an earlier version of the
    product had) are left out, as the daemon and the UI leave them out."""
    # Not at the top: importing the module loads the home's code location (its `defs`).
    from .definitions import build_definitions

    definitions = build_definitions(settings)
    declared = [("sensor", sensor) for sensor in definitions.sensors or []] + [
        ("schedule", schedule) for schedule in definitions.schedules or []
    ]
    states = {
        (state.instigator_type.value.lower(), state.instigator_name): state
        for state in instance.all_instigator_state()
    }
    found = []
    for kind, instigator in declared:
        state = states.get((kind, instigator.name))
        # No state yet: never ticked nor switched; it runs if it is on by default.
        running = (
            state.status != InstigatorStatus.STOPPED
            if state
            else instigator.default_status.value == "RUNNING"
        )
        ticks = (
            instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
            if state
            else []
        )
        tick = ticks[0] if ticks else None
        found.append(
            InstigatorHealth(
                name=instigator.name,
                kind=kind,
                running=running,
                last_tick_at=tick.timestamp if tick else None,
                last_tick_status=tick.status.value.lower() if tick else None,
                last_tick_message=_tick_message(tick) if tick else None,
            )
        )
    return sorted(found, key=lambda instigator: (instigator.kind, instigator.name))


def queued_in_order(instance: DagsterInstance) -> list[QueuedRun]:
    """Dagster's queued runs in the order its run coordinator launches them: the highest
    dagster/priority first, the oldest first among equals."""
    runs = reversed(instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.QUEUED])))
    queued = [
        QueuedRun(
            run.run_id,
            int(run.tags[run_tags.RECORD_ID]) if run_tags.RECORD_ID in run.tags else None,
            run.tags.get(run_tags.QUEUE),
            int(run.tags.get(run_tags.PRIORITY, 0)),
        )
        for run in runs
    ]
    return sorted(queued, key=lambda run: -run.priority)  # stable: oldest first kept


def _waited_seconds(record: RunRecord, now: dt.datetime) -> float:
    since = max(record.created_at, record.run_at or record.created_at)
    return max((now - since).total_seconds(), 0.0)


def health(instance: DagsterInstance, store: RecordStore, settings: Settings) -> Health:
    now = utcnow()
    waiting_records = store.list_runs(status=Status.WAITING.value)
    waiting = collections.Counter(record.queue for record in waiting_records)
    for_time = collections.Counter(
        record.queue for record in waiting_records if record.run_at is not None
    )
    queues = list(dict.fromkeys([*settings.queues, *waiting]))
    return Health(
        daemons=_daemons(instance),
        waiting={queue: waiting[queue] for queue in queues},
        waiting_for_time={queue: for_time[queue] for queue in queues},
        longest_wait={
            queue: max(
                (_waited_seconds(r, now) for r in waiting_records if r.queue == queue),
                default=0.0,
            )
            for queue in queues
        },
        processing=store.list_runs(status=Status.PROCESSING.value),
        queued=queued_in_order(instance),
        instigators=_instigators(instance, settings),
    )
