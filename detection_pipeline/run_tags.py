"""Dagster run tags that tie a Dagster run to its record; visible and filterable in the UI."""

KIND = "detection_pipeline/kind"  # detection or training
RECORD_ID = "detection_pipeline/record_id"
QUEUE = "detection_pipeline/queue"
PRIORITY = "dagster/priority"  # Dagster's own: the queue launches higher values first
# The process running the run: host, pid and start time, for the run launcher's health check.
RUN_WORKER = "detection_pipeline/run_worker"
