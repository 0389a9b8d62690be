"""Processes as /proc shows them, for the benchmarks (bench/suite.py, bench/faults.py)."""

from pathlib import Path


def read_proc(pid: int, name: str) -> str:
    """/proc/PID/NAME, or "" for a process that is gone."""
    try:
        return Path(f"/proc/{pid}/{name}").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def processes() -> dict[int, tuple[int, str]]:
    """pid: (parent pid, command line) of every live process; zombies (exited, not yet waited
    for) left out."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := read_proc(int(entry.name), "stat")):
            state, parent = stat.rsplit(")", 1)[1].split()[:2]
            if state != "Z":
                command = read_proc(int(entry.name), "cmdline").replace("\0", " ")
                found[int(entry.name)] = (int(parent), command)
    return found


def descendants(root: int, table: dict[int, tuple[int, str]]) -> set[int]:
    """The pids below `root` in `table` (processes())."""
    found, todo = set(), [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, _) in table.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                todo.append(pid)
    return found
