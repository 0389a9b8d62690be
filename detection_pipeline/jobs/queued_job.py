"""What makes a graph of ops a job of this product's queue."""

from dagster import GraphDefinition, JobDefinition, in_process_executor

from .. import run_tags
from ..settings import QUEUE_OF_KIND, Settings
from .record_lifecycle import record_failure


def queued_job(graph: GraphDefinition, name: str, kind: str, settings: Settings) -> JobDefinition:
    """The job `name` running `graph`: its ops in one process (MMDetection has a child process
    of its own), its record kept by the failure hook, and the tags of its kind's queue, so a
    run launched from the launchpad, GraphQL, a schedule or a sensor waits where the CLI would
    put it (the launchpad shows the tags, and they can be changed there)."""
    queue = QUEUE_OF_KIND[kind]
    return graph.to_job(
        name=name,
        description=graph.description,
        executor_def=in_process_executor,
        hooks={record_failure},
        tags={
            run_tags.KIND: kind,
            run_tags.QUEUE: queue,
            run_tags.PRIORITY: str(settings.queue(queue).priority),
        },
    )
