"""User-facing errors.

Everything a user can cause (a missing file, a bad option, a corrupted download)
raises a subclass of :class:`ImsaError`. The CLI prints its message on one line
and exits with status 2; library users can catch it.
"""


class ImsaError(Exception):
    """Base class of errors caused by input, configuration or data, not by a bug."""


class DataError(ImsaError):
    """A data file is missing, corrupted, or does not hold what its format promises."""


class ConfigError(ImsaError, ValueError):
    """An option, config key or name is unknown or out of range."""


class NotFittedError(ImsaError, RuntimeError):
    """A method was used for prediction before ``fit``."""


def describe_os_error(error: OSError) -> str:
    """One line for a file-system error on a user's path: the path, what went wrong, what to do.

    The one place where such errors become messages (the CLI prints it).
    """
    path = error.filename if error.filename is not None else "?"
    what = {
        FileNotFoundError: "no such file or directory",
        IsADirectoryError: "is a directory; a file is expected here",
        NotADirectoryError: "a path component is a file; a directory is expected here",
        PermissionError: "permission denied; check its permissions or choose another path",
        FileExistsError: "already exists and is in the way; choose another path",
    }.get(type(error))
    if what is None:
        if error.errno == 40:  # ELOOP
            what = "a symbolic link loop; fix or remove the link"
        elif error.errno == 28:  # ENOSPC
            what = "no space left on the device; free some space or choose another --out"
        else:
            what = error.strerror or str(error)
    return f"{path}: {what}."


def invalid_parameter(name: str, owner: str, expected: str, got) -> ConfigError:
    """One template for parameter errors, as scikit-learn does.

    >>> str(invalid_parameter("rate", "RandomRate", "in [0, 0.7]", 0.9))
    "The 'rate' parameter of RandomRate must be in [0, 0.7]. Got 0.9 instead."
    """
    return ConfigError(f"The {name!r} parameter of {owner} must be {expected}. Got {got!r} instead.")


def did_you_mean(name, valid) -> str:
    """`` Did you mean 'momke'?`` for the valid name closest to a misspelt ``name``, else ``""``.

    >>> did_you_mean("momk", ["cmad", "momke"])
    " Did you mean 'momke'?"
    """
    import difflib

    valid = [str(v) for v in valid]
    longer = [v for v in valid if v.startswith(str(name))]  # "acc2" means acc2_has0 or acc2_non0, not acc7
    close = longer if 0 < len(longer) <= 3 else difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def unknown_name(kind: str, name: str, valid) -> ConfigError:
    """Error for an unknown registry name that lists the valid ones and suggests the closest."""
    valid = sorted(valid)
    return ConfigError(f"Unknown {kind} {name!r}.{did_you_mean(name, valid)} Valid {kind}s: {', '.join(valid)}.")
