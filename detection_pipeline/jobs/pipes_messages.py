"""How the run worker reads the MMDetection child's Dagster Pipes messages: from a file, twice
a second.

Dagster's file readers look at the file 100 times a second for the whole run. The child sends
a handful of messages (opened, its summary, closed), and on a machine whose every core
MMDetection keeps busy, each look takes a core from it for a moment: its threads then wait for
each other. Reading twice a second, and once more when the session closes, loses nothing.
"""

import json
import sys
from threading import Event

from dagster import PipesFileMessageReader
from dagster._core.pipes.context import PipesMessageHandler

POLL_SECONDS = 0.5
PIPES_MESSAGES_FILE = "pipes_messages.jsonl"  # in the run's folder while the child runs


class RunFolderMessageReader(PipesFileMessageReader):
    def _reader_thread(self, handler: PipesMessageHandler, is_resource_complete: Event) -> None:
        try:
            with open(self._path, encoding="utf-8") as messages:
                pending = ""  # a line the child has not finished writing
                while True:
                    closed = is_resource_complete.is_set()  # then this is the last read
                    pending += messages.read()
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        handler.handle_message(json.loads(line))
                    if closed:
                        return
                    is_resource_complete.wait(POLL_SECONDS)
        except Exception:
            handler.report_pipes_framework_exception(
                f"{type(self).__name__} reader thread", sys.exc_info()
            )
            raise
