"""Reading and changing run records and registered models. Plain SQLAlchemy, no Dagster."""

import datetime as dt
from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .database import engine_for
from .schema import ACTIVE_STATUSES, RegisteredModel, RunRecord, Status, utcnow


class RecordNotFound(LookupError):
    pass


class RecordStore:
    def __init__(self, url: str):
        self._sessions = sessionmaker(engine_for(url), expire_on_commit=False)

    def _session(self) -> Session:
        return self._sessions.begin()

    # --- run records ---------------------------------------------------------------------

    def create_run(
        self,
        kind: str,
        queue: str,
        priority: int,
        params: dict,
        model: str | None = None,
        run_at: dt.datetime | None = None,
        key: str | None = None,
        created_at: dt.datetime | None = None,
    ) -> tuple[RunRecord, bool]:
        """A new waiting record, or the one already made with this key. Returns (record, created)."""
        record = RunRecord(
            created_at=created_at or utcnow(),
            kind=kind,
            status=Status.WAITING.value,
            queue=queue,
            priority=priority,
            params=params,
            model=model,
            run_at=run_at,
            idempotency_key=key,
            attempts=0,
            dagster_run_ids=[],
        )
        try:
            with self._session() as session:
                session.add(record)
            return record, True
        except IntegrityError:
            if key is None:
                raise
            with self._session() as session:
                existing = session.scalars(
                    sa.select(RunRecord).where(RunRecord.idempotency_key == key)
                ).one()
            return existing, False

    def get_run(self, record_id: int) -> RunRecord:
        with self._session() as session:
            record = session.get(RunRecord, record_id)
        if record is None:
            raise RecordNotFound(
                f"no run with id {record_id}: `detection-pipeline runs` lists them"
            )
        return record

    def list_runs(
        self, status: str | None = None, queue: str | None = None, kind: str | None = None
    ) -> list[RunRecord]:
        query = sa.select(RunRecord).order_by(RunRecord.id)
        for column, value in (
            (RunRecord.status, status),
            (RunRecord.queue, queue),
            (RunRecord.kind, kind),
        ):
            if value:
                query = query.where(column == value)
        with self._session() as session:
            return list(session.scalars(query))

    def update(self, record_id: int, **values) -> RunRecord:
        with self._session() as session:
            record = session.get(RunRecord, record_id)
            if record is None:
                raise RecordNotFound(f"no run with id {record_id}")
            for name, value in values.items():
                setattr(record, name, value)
        return record

    def add_attempt(self, record_id: int, dagster_run_id: str) -> RunRecord:
        """Links one more Dagster run (an attempt) to the record: the run is in Dagster's queue,
        so the record no longer waits for a time of its own."""
        with self._session() as session:
            record = session.get(RunRecord, record_id, with_for_update=True)
            if dagster_run_id not in record.dagster_run_ids:
                record.dagster_run_ids = [*record.dagster_run_ids, dagster_run_id]
                record.attempts = len(record.dagster_run_ids)
                record.run_at = None
        return record

    def transition(
        self, record_id: int, allowed_from: Collection[str], **values
    ) -> RunRecord | None:
        """Updates the record only while its status is one of `allowed_from`, in one statement,
        so two writers (a run and a user, say) cannot both win. Returns None if it was not."""
        return self._update_if(record_id, RunRecord.status.in_(allowed_from), values)

    def settle_retry(self, record_id: int, **values) -> RunRecord | None:
        """Records the upkeep sensor's decision on a failed record, once; None if it was made."""
        pending = sa.and_(RunRecord.retry_pending.is_(True), RunRecord.status == Status.ERROR.value)
        return self._update_if(record_id, pending, {**values, "retry_pending": False})

    def _update_if(self, record_id: int, condition, values: dict) -> RunRecord | None:
        with self._session() as session:
            changed = session.execute(
                sa.update(RunRecord).where(RunRecord.id == record_id, condition).values(**values)
            ).rowcount
        return self.get_run(record_id) if changed else None

    def mark_processing(self, record_id: int, dagster_run_id: str) -> RunRecord | None:
        """A waiting record starts its next attempt; None if it is no longer waiting."""
        self.add_attempt(record_id, dagster_run_id)
        return self.transition(
            record_id,
            {Status.WAITING.value},
            status=Status.PROCESSING.value,
            started_at=utcnow(),
            finished_at=None,
            error=None,
        )

    def mark_finished(self, record_id: int) -> RunRecord | None:
        """Success; a record already final keeps what it has."""
        return self.transition(
            record_id, ACTIVE_STATUSES, status=Status.SUCCESS.value, finished_at=utcnow()
        )

    def mark_failed(
        self, record_id: int, error: str, not_retried: str | None = None
    ) -> RunRecord | None:
        """Error with its message, left to the upkeep sensor unless `not_retried` says why no
        retry can help; a record already final keeps what it has."""
        return self.transition(
            record_id,
            ACTIVE_STATUSES,
            status=Status.ERROR.value,
            finished_at=utcnow(),
            error=error,
            retry_pending=not_retried is None,
            not_retried=not_retried,
        )

    def active_runs(self) -> list[RunRecord]:
        """Waiting and processing records (an indexed query: finished records cost nothing)."""
        return self._select(RunRecord.status.in_(ACTIVE_STATUSES))

    def retry_pending_runs(self) -> list[RunRecord]:
        """Failed records the upkeep sensor has not decided on yet."""
        return self._select(RunRecord.retry_pending.is_(True))

    def _select(self, condition) -> list[RunRecord]:
        with self._session() as session:
            return list(
                session.scalars(sa.select(RunRecord).where(condition).order_by(RunRecord.id))
            )

    @staticmethod
    def _due(now: dt.datetime):
        return sa.and_(
            RunRecord.status == Status.WAITING.value,
            RunRecord.run_at.is_not(None),
            RunRecord.run_at <= now,
        )

    def due_runs(self, now: dt.datetime) -> list[RunRecord]:
        """Delayed records and retries whose time has come, highest priority first."""
        query = (
            sa.select(RunRecord)
            .where(self._due(now))
            .order_by(RunRecord.priority.desc(), RunRecord.run_at, RunRecord.id)
        )
        with self._session() as session:
            return list(session.scalars(query))

    def claim_due(self, record_id: int, now: dt.datetime, lease: dt.timedelta) -> RunRecord | None:
        """Moves a due record's run_at on by `lease`, once: the caller that gets it back queues
        it, and should that caller die first, the record is due again when the lease ends."""
        return self._update_if(record_id, self._due(now), {"run_at": now + lease})

    def ended_counts(self) -> list[tuple[str, str, str, int, int]]:
        """(kind, queue, status, runs, attempts beyond the first) of the ended records: one
        aggregate query, for the metrics."""
        retries = sa.func.sum(sa.case((RunRecord.attempts > 1, RunRecord.attempts - 1), else_=0))
        query = (
            sa.select(RunRecord.kind, RunRecord.queue, RunRecord.status, sa.func.count(), retries)
            .where(RunRecord.status.not_in(ACTIVE_STATUSES))
            .group_by(RunRecord.kind, RunRecord.queue, RunRecord.status)
        )
        with self._session() as session:
            return [tuple(row) for row in session.execute(query)]

    def ended_since(self, since: dt.datetime) -> list[RunRecord]:
        """Records that ended after `since` having started, latest first."""
        query = sa.select(RunRecord).where(
            RunRecord.finished_at > since, RunRecord.started_at.is_not(None)
        )
        with self._session() as session:
            return list(session.scalars(query.order_by(RunRecord.finished_at.desc())))

    def delete_run(self, record_id: int) -> None:
        with self._session() as session:
            session.execute(sa.delete(RunRecord).where(RunRecord.id == record_id))

    # --- registered models ---------------------------------------------------------------

    def register_model(self, name: str, **fields) -> RegisteredModel:
        """Stores the next version of `name`."""
        for _ in range(3):  # two trainings of one name may finish together
            try:
                with self._session() as session:
                    latest = session.scalar(
                        sa.select(sa.func.max(RegisteredModel.version)).where(
                            RegisteredModel.name == name
                        )
                    )
                    model = RegisteredModel(name=name, version=(latest or 0) + 1, **fields)
                    session.add(model)
                return model
            except IntegrityError:
                continue
        raise RuntimeError(f"could not register a new version of model {name!r}; try again")

    def find_model(self, name: str, version: int | None = None) -> RegisteredModel | None:
        query = sa.select(RegisteredModel).where(RegisteredModel.name == name)
        if version is not None:
            query = query.where(RegisteredModel.version == version)
        with self._session() as session:
            return session.scalars(query.order_by(RegisteredModel.version.desc())).first()

    def delete_models(self, name: str) -> int:
        """Deletes every version of `name`; returns how many there were."""
        with self._session() as session:
            return session.execute(
                sa.delete(RegisteredModel).where(RegisteredModel.name == name)
            ).rowcount

    def list_models(self) -> list[RegisteredModel]:
        query = sa.select(RegisteredModel).order_by(RegisteredModel.name, RegisteredModel.version)
        with self._session() as session:
            return list(session.scalars(query))
