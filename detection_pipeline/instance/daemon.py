"""`python -m detection_pipeline.instance.daemon run -w WORKSPACE`: Dagster's daemon, as
`dagster-daemon` starts it, ending with the `up` (or `daemon`) that started it."""

import sys

from ..process_group import end_with_supervisor

if __name__ == "__main__":
    end_with_supervisor()
    from dagster._daemon.cli import main

    sys.exit(main())
