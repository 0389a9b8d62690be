"""Dagster run tags that tie a Dagster run to its record; visible and filterable in the UI."""

KIND = "detection_pipeline/kind"  # detection or training
RECORD_ID = "detection_pipeline/record_id"
QUEUE = "detection_pipeline/queue"
PRIORITY = "dagster/priority"  # Dagster's own: the queue launches higher values first
# The process running the run: host, pid and start time, for the run launcher's health check.
RUN_WORKER = "detection_pipeline/run_worker"
# The record's state, written on its latest Dagster run whenever it changes (an earlier attempt's
# run says "retried"): see records/mirrored_store.py.
RECORD_STATUS = "detection_pipeline/record_status"
ERROR = "detection_pipeline/error"
NEXT_TRY = "detection_pipeline/next_try"
NOT_RETRIED = "detection_pipeline/not_retried"
OUTPUT_DIR = "detection_pipeline/output_dir"
