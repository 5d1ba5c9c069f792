"""The errors a user can cause and fix: the command line prints them in one line and exits 2.
Anything else is a bug and keeps its traceback."""
from __future__ import annotations


class UserError(ValueError):
    """Bad input, a bad parameter or a name that does not resolve: one line, exit code 2."""


class ConfigError(UserError):
    """A parameter that cannot be used, naming where it came from and the key."""


class DataError(UserError):
    """Bad input, naming the file, the record and the field."""

    def __init__(self, where: str, field: str | None, problem: str):
        self.where, self.field, self.problem = where, field, problem
        super().__init__(f"{where}: field '{field}': {problem}" if field else f"{where}: {problem}")


class ModelNotFoundError(UserError):
    """A backbone, critic or model name that is no alias, no local path and no reachable hub name."""


class CriticMismatchError(UserError):
    """Pairs, or a reward model and its test pairs, were not critiqued the same way."""


class CriticError(RuntimeError):
    """A critic or model backend could not produce its outputs (after retries, for HTTP): exit 1."""
