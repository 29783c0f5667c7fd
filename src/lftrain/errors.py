"""Error types with distinct exit codes: people must be able to tell "your input is wrong" from "we crashed"."""

from __future__ import annotations

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_INPUT = 2  # bad recipe, bad data, bad arguments: fix your input
EXIT_RUN_STATE = 3  # the run directory forbids this (finished run, locked run)
EXIT_TRAINING = 5  # training could not go on: non-finite loss, out of memory at micro-batch 1, disk full
EXIT_PREEMPTED = 143  # 128 + SIGTERM: stopped on request after a checkpoint; `lft train` again resumes


class LftError(Exception):
    """Base of every error lftrain raises on purpose. `exit_code` is what the CLI returns."""

    exit_code = EXIT_CRASH


class InputError(LftError):
    """The user's input (recipe, data, arguments, model directory) is wrong; the message says where."""

    exit_code = EXIT_INPUT


class RecipeError(InputError):
    """A recipe failed to parse or validate."""


class DataError(InputError):
    """A data file failed to read or validate. Carries the location so messages can name it."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 column: str | None = None, line: int | None = None) -> None:
        self.file, self.row, self.column, self.line = file, row, column, line
        where = []
        if file:
            where.append(str(file))
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if column:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ModelLoadError(InputError):
    """A model directory is missing, incomplete, or unsafe to load under the recipe's settings."""


class RunStateError(LftError):
    """The run directory is in a state that forbids the request (e.g. training a finished run again)."""

    exit_code = EXIT_RUN_STATE


class TrainingError(LftError):
    """Training cannot go on (non-finite loss, out of memory at micro-batch 1, disk full); the message says why."""

    exit_code = EXIT_TRAINING


class DiskFullError(TrainingError):
    """No space left while writing the run directory; what was written before is intact."""


class Preempted(LftError):
    """SIGTERM arrived: the current step finished and a checkpoint was written. Not a failure."""

    exit_code = EXIT_PREEMPTED
