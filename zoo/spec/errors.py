"""Exception types. The CLI turns each into one line and exit code 2 (bad input)
or 1 (a failure of the zoo's own work); a traceback only under ``--debug``."""

from __future__ import annotations


class ZooError(Exception):
    """Base of every error the zoo reports to a person."""

    exit_code = 1


class SpecError(ZooError):
    """A spec file (or an override) that cannot be loaded or validated.

    ``file``/``line``/``field`` locate the problem; ``str()`` is one line:
    ``specs/x.yaml:12: decoder.attention.kv_head: unknown field 'kv_head'; did you mean 'kv_heads'?``
    ``others`` holds further errors found in the same spec (the CLI prints one per line).
    """

    exit_code = 2

    def __init__(self, message: str, file: str | None = None, line: int | None = None, field: str | None = None):
        self.message, self.file, self.line, self.field = message, file, line, field
        self.others: list[SpecError] = []
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        what = f"{self.field}: " if self.field else ""
        return f"{where}{what}{self.message}"


class ArtifactError(ZooError):
    """An artifact folder that is missing, incomplete, corrupted or of another format version."""

    exit_code = 2


class ExportError(ZooError):
    """A model that could not be exported, or whose export failed its checks."""


class ParityError(ExportError):
    """The exported graph disagrees with the torch module beyond the stated tolerance."""


class InputError(ZooError):
    """Bad runtime input: token ids, shapes, options."""

    exit_code = 2


class OutputError(ZooError):
    """A run whose outputs hold NaN or inf: refused rather than handed back as if it were a result."""


def one_line(text) -> str:
    """``text`` with its whitespace runs (newlines included) as single spaces: a message on one line."""
    return " ".join(str(text).split())
