"""How a transfer runs: a typed, validated set of options (as s3transfer's TransferConfig), which the
command and the REST service each build from their own input (the defaults and limits are in
limits.py). A problem is one OptionError that names the option as the API calls it."""
import os
import re
from dataclasses import dataclass

from cloudmesh.transfer.errors import OptionError, UsageError
from cloudmesh.transfer.limits import (DEFAULT_CHUNK, DEFAULT_PARALLEL, DEFAULT_RETRIES, MAX_CHUNK, MAX_PARALLEL,
                                       MAX_RETRIES, MEMORY_BUDGET, MEMORY_VARIABLE, MIN_CHUNK, MiB)


def parse_size(value) -> int:
    """A byte count from '8MiB', '5MB', '1048576', '4k' (binary units)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", str(value).lower())
    if not match:
        raise UsageError(f"'{value}' is not a size (for example 8MiB)")
    return int(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " ")


def parse_bool(value, option: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise OptionError(option, f"must be True or False, not '{value}'")


def whole_number(value, option: str, low: int, high: int) -> int:
    """An option's value as a whole number from `low` to `high`, else one clear OptionError."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise OptionError(option, f"must be a whole number, not '{value}'") from None
    if not low <= number <= high:
        raise OptionError(option, f"must be between {low} and {high}, not {number}")
    return number


def memory_budget() -> int:
    """The bytes of parts one process may hold: $CMS_TRANSFER_MEMORY (a size), else MEMORY_BUDGET."""
    value = os.environ.get(MEMORY_VARIABLE, "").strip()
    if not value:
        return MEMORY_BUDGET
    try:
        return parse_size(value)
    except UsageError:
        raise UsageError(f"{MEMORY_VARIABLE} must be a size such as 4GiB, not '{value[:40]}'") from None


@dataclass(frozen=True)
class TransferConfig:
    """`parallel` parts (and so about `parallel x chunksize` bytes) in flight, twice as many objects
    (small objects are bound by round trips rather than memory), and `retries` of each request."""

    parallel: int = DEFAULT_PARALLEL
    chunksize: int = DEFAULT_CHUNK
    retries: int = DEFAULT_RETRIES

    @classmethod
    def of(cls, parallel=DEFAULT_PARALLEL, chunksize=DEFAULT_CHUNK, retries=DEFAULT_RETRIES) -> "TransferConfig":
        """The options from what a user gave (numbers, or strings such as '8MiB'), validated."""
        try:
            size = parse_size(chunksize)
        except UsageError:
            raise OptionError("chunksize", f"'{chunksize}' is not a size (for example 8MiB)") from None
        if size < MIN_CHUNK:
            raise OptionError("chunksize", f"must be at least {MIN_CHUNK // MiB}MiB")
        if size > MAX_CHUNK:
            raise OptionError("chunksize", f"must be at most {MAX_CHUNK // MiB}MiB (each of the parallel parts is "
                                           f"held in memory)")
        config = cls(whole_number(parallel, "parallel", 1, MAX_PARALLEL), size,
                     whole_number(retries, "retries", 0, MAX_RETRIES))
        budget = memory_budget()
        if config.memory > budget:
            raise UsageError(f"parallel x chunksize is {config.memory // MiB}MiB, over the memory budget of "
                             f"{budget // MiB}MiB ({MEMORY_VARIABLE}); lower one of them")
        return config

    @property
    def objects(self) -> int:
        return 2 * self.parallel

    @property
    def memory(self) -> int:
        """The bytes of parts a run may hold at once, which the memory budget bounds."""
        return self.parallel * self.chunksize
