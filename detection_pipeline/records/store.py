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
    ) -> tuple[RunRecord, bool]:
        """A new waiting record, or the one already made with this key. Returns (record, created)."""
        record = RunRecord(
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
        """Links one more Dagster run (an attempt) to the record."""
        with self._session() as session:
            record = session.get(RunRecord, record_id, with_for_update=True)
            if dagster_run_id not in record.dagster_run_ids:
                record.dagster_run_ids = [*record.dagster_run_ids, dagster_run_id]
        return record

    def transition(
        self, record_id: int, allowed_from: Collection[str], **values
    ) -> RunRecord | None:
        """Updates the record only while its status is one of `allowed_from`, in one statement,
        so two writers (a run and a user, say) cannot both win. Returns None if it was not."""
        with self._session() as session:
            changed = session.execute(
                sa.update(RunRecord)
                .where(RunRecord.id == record_id, RunRecord.status.in_(allowed_from))
                .values(**values)
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
            attempts=RunRecord.attempts + 1,
        )

    def mark_finished(self, record_id: int, error: str | None = None) -> RunRecord | None:
        """Success, or error with its message; a record already final keeps what it has."""
        status = Status.ERROR if error else Status.SUCCESS
        return self.transition(
            record_id,
            ACTIVE_STATUSES,
            status=status.value,
            finished_at=utcnow(),
            error=error,
        )

    def due_runs(self, now: dt.datetime) -> list[RunRecord]:
        """Delayed records whose time has come, highest priority first."""
        query = (
            sa.select(RunRecord)
            .where(
                RunRecord.status == Status.WAITING.value,
                RunRecord.run_at.is_not(None),
                RunRecord.run_at <= now,
            )
            .order_by(RunRecord.priority.desc(), RunRecord.run_at, RunRecord.id)
        )
        with self._session() as session:
            return list(session.scalars(query))

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
