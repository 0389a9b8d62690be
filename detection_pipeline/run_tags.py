"""Dagster run tags that tie a Dagster run to its record; visible and filterable in the UI."""

RECORD_ID = "detection_pipeline/record_id"
QUEUE = "detection_pipeline/queue"
PRIORITY = "dagster/priority"  # Dagster's own: the queue launches higher values first
