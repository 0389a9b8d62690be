"""Reading and changing run records and registered models. Plain SQLAlchemy, no Dagster."""

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .database import engine_for
from .schema import RegisteredModel, RunRecord, Status, utcnow


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

    def list_runs(self, status: str | None = None, queue: str | None = None) -> list[RunRecord]:
        query = sa.select(RunRecord).order_by(RunRecord.id)
        if status:
            query = query.where(RunRecord.status == status)
        if queue:
            query = query.where(RunRecord.queue == queue)
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

    def mark_processing(self, record_id: int, dagster_run_id: str) -> RunRecord:
        self.add_attempt(record_id, dagster_run_id)
        record = self.get_run(record_id)
        return self.update(
            record_id,
            status=Status.PROCESSING.value,
            started_at=utcnow(),
            finished_at=None,
            error=None,
            attempts=record.attempts + 1,
        )

    def mark_finished(self, record_id: int, error: str | None = None) -> RunRecord:
        status = Status.ERROR if error else Status.SUCCESS
        return self.update(record_id, status=status.value, finished_at=utcnow(), error=error)

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

    def list_models(self) -> list[RegisteredModel]:
        query = sa.select(RegisteredModel).order_by(RegisteredModel.name, RegisteredModel.version)
        with self._session() as session:
            return list(session.scalars(query))
