class InputError(ValueError):
    """Bad input from a user: the message says what is wrong and what to do.

    Submission refuses it; a run that meets it fails without touching anything outside its folder.
    """
