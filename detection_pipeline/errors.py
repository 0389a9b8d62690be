class InputError(ValueError):
    """Bad input from a user: the message says what is wrong and what to do.

    Submission refuses it; a run that meets it fails without touching anything outside its folder.
    """


class NotAllowed(Exception):
    """An operation the run (or model) does not allow in its current state; the message says
    what to do instead."""


def validation_problems(error) -> str:
    """A pydantic ValidationError as one line: `field.path: message; ...`."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
