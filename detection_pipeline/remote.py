"""The CLI's way to a Dagster webserver elsewhere (`--url`): submitting, following, cancelling
and terminating runs over its GraphQL API alone.

Run records live in the server's database, out of GraphQL's reach; what is known of a record
there is written on its latest Dagster run as tags (records/mirrored_store.py), so a record is
read back from the runs that carry its id. Runs waiting for a delay have no Dagster run yet and
are seen only on the server.
"""

import dataclasses
import datetime as dt
import time
import urllib.parse

import requests
import yaml
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from gql import Client, gql
from gql.transport.exceptions import TransportError
from gql.transport.requests import RequestsHTTPTransport

from . import run_tags
from .errors import NotAllowed
from .records import RecordNotFound
from .records.schema import ACTIVE_STATUSES, FINAL_STATUSES, Status
from .records.service import (
    JOBS,
    KIND_OF_JOB,
    TERMINATED,
    model_of,
    params_of,
    parse_params,
    run_config,
)

RUNS_QUERY = gql(
    """
    query Runs($filter: RunsFilter, $limit: Int) {
      runsOrError(filter: $filter, limit: $limit) {
        __typename
        ... on Runs {
          results { runId jobName status creationTime startTime runConfigYaml tags { key value } }
        }
        ... on PythonError { message }
      }
    }
    """
)
# How long a submitted run may wait for its record: the server's upkeep sensor gives
# it one within a tick (5 s) while it is queued.
ADOPTION_TIMEOUT_SECONDS = 60
WAITING_RUN_STATUSES = {"QUEUED", "NOT_STARTED", "STARTING", "MANAGED"}
RUN_STATUS_OF_FINISHED = {"SUCCESS": Status.SUCCESS.value, "FAILURE": Status.ERROR.value}


class RemoteError(RuntimeError):
    """The webserver could not be reached or refused the request."""


@dataclasses.dataclass
class RemoteRecord:
    """A run's record as the webserver's GraphQL shows it: the fields `show` and `runs` print."""

    id: int
    kind: str
    status: str
    queue: str
    priority: int
    model: str | None
    created_at: dt.datetime
    dagster_run_ids: list[str]
    error: str | None
    run_at: dt.datetime | None
    not_retried: str | None
    retry_pending: bool
    output_dir: str | None  # on the server

    @property
    def attempts(self) -> int:
        return len(self.dagster_run_ids)

    @property
    def dagster_run_id(self) -> str:
        return self.dagster_run_ids[-1]

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        return {
            **{k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in values.items()},
            "attempts": self.attempts,
            "dagster_run_id": self.dagster_run_id,
        }


def _tags(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


def _status(run: dict, written: str | None) -> str:
    """The record's status: the one written on its latest run, unless that run has ended since
    and the server's upkeep sensor is yet to catch up (a tick, 5 s)."""
    ended = run["status"] in (*RUN_STATUS_OF_FINISHED, "CANCELED")
    if written in FINAL_STATUSES or (written in ACTIVE_STATUSES and not ended):
        return written
    if run["status"] == "CANCELED":  # terminated once it had started, else cancelled
        return Status.ERROR.value if run["startTime"] else Status.CANCELLED.value
    if ended:
        return RUN_STATUS_OF_FINISHED[run["status"]]
    return (
        Status.WAITING.value if run["status"] in WAITING_RUN_STATUSES else Status.PROCESSING.value
    )


def _record(record_id: int, runs: list[dict]) -> RemoteRecord:
    """The record whose attempts are `runs`, oldest first."""
    first, latest = runs[0], runs[-1]
    tags = _tags(latest)
    status = _status(latest, tags.get(run_tags.RECORD_STATUS))
    terminated = latest["status"] == "CANCELED" and status == Status.ERROR.value
    next_try = tags.get(run_tags.NEXT_TRY) if status == Status.WAITING.value else None
    kind = KIND_OF_JOB[latest["jobName"]]
    return RemoteRecord(
        id=record_id,
        kind=kind,
        status=status,
        queue=tags.get(run_tags.QUEUE, ""),
        priority=int(tags.get(run_tags.PRIORITY, 0)),
        # As YAML, which a run config's NaN (stored before the server refused them) survives.
        model=model_of(params_of(kind, yaml.safe_load(first["runConfigYaml"]) or {})),
        created_at=dt.datetime.fromtimestamp(first["creationTime"], dt.UTC),
        dagster_run_ids=[run["runId"] for run in runs],
        error=tags.get(run_tags.ERROR) or (TERMINATED if terminated else None),
        run_at=dt.datetime.fromisoformat(next_try) if next_try else None,
        not_retried=tags.get(run_tags.NOT_RETRIED),
        output_dir=tags.get(run_tags.OUTPUT_DIR),
        # failed, and the server's upkeep sensor is yet to say whether it tries again
        retry_pending=status == Status.ERROR.value
        and not terminated
        and run_tags.NOT_RETRIED not in tags,
    )


@dataclasses.dataclass(frozen=True)
class Webserver:
    """A webserver URL taken apart: user and password (as behind an authenticating proxy,
    http://user:password@host/prefix) go into the requests, never into messages. Without them
    requests takes the login for the host from ~/.netrc (or the file $NETRC names)."""

    url: str  # without the user and password
    auth: requests.auth.HTTPBasicAuth | None

    @classmethod
    def parse(cls, url: str) -> "Webserver":
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RemoteError("--url must be a webserver's URL, like http://127.0.0.1:3000")
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        url = parts._replace(netloc=host).geturl().rstrip("/")
        if parts.username:
            login = (
                urllib.parse.unquote(parts.username),
                urllib.parse.unquote(parts.password or ""),
            )
        else:
            login = requests.utils.get_netrc_auth(url)
        return cls(url, requests.auth.HTTPBasicAuth(*login) if login else None)

    def client(self) -> DagsterGraphQLClient:
        parts = urllib.parse.urlsplit(self.url)
        return DagsterGraphQLClient(
            parts.hostname,
            port_number=parts.port,
            use_https=parts.scheme == "https",
            path_prefix=parts.path,
            auth=self.auth,
        )


class RemoteService:
    """Submits and follows runs through a webserver's GraphQL API."""

    def __init__(self, url: str):
        webserver = Webserver.parse(url)
        self.url = webserver.url
        self.client = webserver.client()
        self._graphql = Client(
            transport=RequestsHTTPTransport(
                url=f"{webserver.url}/graphql", auth=webserver.auth, timeout=60
            )
        )

    def _runs(self, run_filter: dict | None = None, limit: int | None = None) -> list[dict]:
        """Runs of this product's jobs (GraphQL's RunsFilter), oldest first."""
        try:
            answer = self._graphql.execute(
                RUNS_QUERY, variable_values={"filter": run_filter, "limit": limit}
            )["runsOrError"]
        except (requests.RequestException, TransportError) as error:
            raise RemoteError(f"could not ask {self.url}: {error}") from error
        if answer["__typename"] != "Runs":
            raise RemoteError(f"{self.url} answered: {answer.get('message', answer['__typename'])}")
        runs = [run for run in answer["results"] if run["jobName"] in KIND_OF_JOB]
        return sorted(runs, key=lambda run: run["creationTime"])

    def list_runs(
        self, status: str | None = None, queue: str | None = None, limit: int = 1000
    ) -> list[RemoteRecord]:
        """The records of the latest `limit` Dagster runs, oldest first; runs still waiting for
        their record (the server's sensor gives them one within seconds) are left out."""
        attempts: dict[int, list[dict]] = {}
        for run in self._runs(limit=limit):
            tags = _tags(run)
            if run_tags.RECORD_ID in tags:
                attempts.setdefault(int(tags[run_tags.RECORD_ID]), []).append(run)
        records = [_record(record_id, runs) for record_id, runs in sorted(attempts.items())]
        return [r for r in records if status in (None, r.status) and queue in (None, r.queue)]

    def get_run(self, record_id: int) -> RemoteRecord:
        runs = self._runs({"tags": [{"key": run_tags.RECORD_ID, "value": str(record_id)}]})
        if not runs:
            raise RecordNotFound(
                f"no run with id {record_id} at {self.url}: `detection-pipeline --url "
                f"{self.url} runs` lists them (runs waiting for a delay show only on the server)"
            )
        return _record(record_id, runs)

    def submit(
        self, kind: str, params: dict, queue: str | None = None, priority: int | None = None
    ) -> RemoteRecord:
        """Launches a run into the server's queue and returns its record once it has one.

        The server checks the inputs when the run starts: a run with bad input fails at once
        with what to fix, and is not retried."""
        config = parse_params(kind, params)
        tags = {run_tags.QUEUE: queue} if queue else {}
        if priority is not None:
            tags[run_tags.PRIORITY] = str(priority)
        try:
            run_id = self.client.submit_job_execution(
                JOBS[kind].job_name,
                run_config=run_config(kind, config.model_dump()),
                tags=tags,
            )
        except DagsterGraphQLClientError as error:
            raise RemoteError(f"{self.url} did not take the run: {error}") from error
        deadline = time.monotonic() + ADOPTION_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            [run] = self._runs({"runIds": [run_id]}, limit=1)
            tags = _tags(run)
            if run_tags.RECORD_ID in tags:
                return self.get_run(int(tags[run_tags.RECORD_ID]))
            time.sleep(1)
        raise RemoteError(
            f"Dagster run {run_id} is queued at {self.url} but got no record within "
            f"{ADOPTION_TIMEOUT_SECONDS} s: is the server's daemon running "
            "(`detection-pipeline status` there)?"
        )

    def cancel(self, record_id: int) -> RemoteRecord:
        """Takes a queued run off the server's queue."""
        record = self.get_run(record_id)
        if record.run_at is not None:
            raise NotAllowed(
                f"run {record_id} waits for its next try, which only the server's records hold: "
                f"cancel it there with `detection-pipeline cancel {record_id}`"
            )
        if record.status != Status.WAITING.value:
            raise NotAllowed(
                f"run {record_id} is {record.status}, not waiting: nothing to cancel"
                + (f"; `terminate {record_id}` stops it" if record.status == "processing" else "")
            )
        return self._stop(record, Status.CANCELLED.value)

    def terminate(self, record_id: int) -> RemoteRecord:
        """Stops a processing run on the server, MMDetection and all it started included."""
        record = self.get_run(record_id)
        if record.status != Status.PROCESSING.value:
            raise NotAllowed(
                f"run {record_id} is {record.status}, not processing: nothing to terminate"
            )
        return self._stop(record, Status.ERROR.value)

    def _stop(
        self, record: RemoteRecord, status: str, timeout_seconds: float = 120
    ) -> RemoteRecord:
        """Asks Dagster to stop the record's run (a queued one is cancelled) and waits until
        the record says `status`."""
        try:
            self.client.terminate_run(record.dagster_run_id)
        except DagsterGraphQLClientError as error:
            raise RemoteError(f"{self.url} did not stop run {record.id}: {error}") from error
        return self.wait(record.id, timeout_seconds, until=lambda r: r.status == status)

    def wait(
        self,
        record_id: int,
        timeout_seconds: float | None = None,
        poll_seconds: float = 2.0,
        until=lambda record: record.status in FINAL_STATUSES and not record.retry_pending,
    ) -> RemoteRecord:
        """Blocks until the run ends, retries included (or until `until` holds)."""
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        while not until(record := self.get_run(record_id)):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"run {record_id} is still {record.status} after {timeout_seconds:.0f} s"
                )
            time.sleep(poll_seconds)
        return record
