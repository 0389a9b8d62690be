"""The tables this product keeps beside Dagster's own, in the same database.

Every name starts with `dp_` so the tables never collide with Dagster's; migrations keep their
own version table for the same reason.
"""

import datetime as dt
import enum

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Where Alembic keeps the records' schema revision; Dagster's own migrations use `alembic_version`.
VERSION_TABLE = "dp_alembic_version"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every database (SQLite forgets the zone it was given)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(dt.UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    def to_dict(self) -> dict:
        """Column values, times as ISO strings: what `--json` prints."""
        values = {column.name: getattr(self, column.name) for column in self.__table__.columns}
        return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in values.items()}


class Kind(str, enum.Enum):
    DETECTION = "detection"
    TRAINING = "training"


class Status(str, enum.Enum):
    WAITING = "waiting"
    PROCESSING = "processing"
    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"


# A record in one of these can still change; one in the other has ended.
ACTIVE_STATUSES = frozenset({Status.WAITING.value, Status.PROCESSING.value})
FINAL_STATUSES = frozenset({Status.SUCCESS.value, Status.ERROR.value, Status.CANCELLED.value})


class RunRecord(Base):
    """One detection or training run as a user sees it, across all its Dagster attempts."""

    __tablename__ = "dp_run_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True, default=Status.WAITING.value)
    queue: Mapped[str] = mapped_column(String(64), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Not before this: a delayed run, or the next try of a failed one.
    run_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    # Dagster runs made for it: an attempt counts once queued, whether it got to start or not,
    # so a run that cannot even start is not retried for ever.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    dagster_run_ids: Mapped[list] = mapped_column(JSON, default=list)
    output_dir: Mapped[str | None] = mapped_column(Text)
    # The last attempt's error; kept while a retry waits, so the user sees what went wrong.
    error: Mapped[str | None] = mapped_column(Text)
    # Failed, and the upkeep sensor has yet to decide whether to try again.
    retry_pending: Mapped[bool] = mapped_column(
        Boolean, index=True, default=False, server_default=false()
    )
    # Why a failed run was not tried again (bad input, terminated, attempts used up).
    not_retried: Mapped[str | None] = mapped_column(Text)
    # The model a detection run uses, or the model a training run registers.
    model: Mapped[str | None] = mapped_column(String(128))
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(256), unique=True)

    @property
    def dagster_run_id(self) -> str | None:
        return self.dagster_run_ids[-1] if self.dagster_run_ids else None

    def to_dict(self) -> dict:
        return {**super().to_dict(), "dagster_run_id": self.dagster_run_id}


class RegisteredModel(Base):
    """A trained detector that detection runs can name."""

    __tablename__ = "dp_models"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    classes: Mapped[list] = mapped_column(JSON)
    config: Mapped[str] = mapped_column(Text)
    checkpoint: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    training_record_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
