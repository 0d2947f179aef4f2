"""The errors a user can meet. Each carries one clear line that is safe to print (no secrets)."""


class TransferError(Exception):
    """A failure the user should read as one line; the command exits non-zero on it."""

    exit_code = 1


class UsageError(TransferError):
    """The input is invalid: a bad option value, storage name or path."""

    exit_code = 2


class OptionError(UsageError):
    """An option's value is invalid: `option` names it as the API calls it (`chunksize`), which the
    command shows as `--chunksize`; `problem` says what is wrong with it."""

    def __init__(self, option: str, problem: str):
        super().__init__(f"{option} {problem}")
        self.option, self.problem = option, problem


class ConfigError(UsageError):
    """cloudmesh.yaml or a transfer config file is missing, malformed or incomplete."""


class Conflict(UsageError):
    """The transfer is not in a state that allows this (it runs, or it has ended)."""


class IdInUse(Conflict):
    """A transfer id was reused."""


class NotFound(TransferError):
    """A source object, folder, bucket or container does not exist."""


class Changed(TransferError):
    """An object is no longer the version that was read (a conditional request failed)."""


class IntegrityError(TransferError):
    """The bytes at the target are not the bytes of the source."""


class RecordsError(TransferError):
    """The transfer records cannot be read or written (a corrupt, read-only or missing store)."""


class RecordsBusy(RecordsError):
    """Another process holds the transfer records locked for longer than a write waits."""
