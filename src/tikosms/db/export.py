"""CSV export of rows about to be deleted (`tikosms db prune --export DIR`).

One file per table per run (`parts-20261202T194500Z.csv`, `.csv.gz` with gzip). Each batch's
rows are written, flushed and fsynced *before* the batch's DELETE commits; if writing fails the
file is cut back to where the batch began and the error propagates, so the delete rolls back:
no row is ever deleted without being on disk first. With gzip every batch is its own gzip member
(concatenated members are one valid gzip file; `gzip -dc`, `zcat` and Python's gzip read it), so a
batch can be cut back just the same.

Format: a header line, then one line per row; every value that is not NULL is quoted and NULL is
an unquoted empty field (what PostgreSQL's `COPY ... CSV` reads as NULL, so '' and NULL stay
apart). Values are the domain's: money as a decimal ("0.045000"), times ISO 8601 with their UTC
offset.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tikosms.errors import OperatorError


@dataclass(frozen=True, slots=True)
class TableRows:
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]

    def values(self, column: str) -> list[Any]:
        i = list(self.columns).index(column)
        return [row[i] for row in self.rows]


class CsvExport:
    def __init__(self, directory: Path, stamp: str, compress: bool = False) -> None:
        """`stamp` names this run's files (UTC time of the run's start, e.g. 20261202T194500Z)."""
        self.directory = directory
        self.stamp = stamp
        self.compress = compress
        self.files: dict[str, Path] = {}  # table -> its file, once a row was written
        self.rows: dict[str, int] = {}  # table -> rows written

    def check(self) -> None:
        """Fail before anything is deleted if the directory cannot take the files."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OperatorError(f"cannot create the export directory {self.directory}: "
                                f"{exc.strerror or exc}") from exc
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise OperatorError(f"the export directory {self.directory} is not writable")

    def path_for(self, table: str) -> Path:
        suffix = ".csv.gz" if self.compress else ".csv"
        return self.directory / f"{table}-{self.stamp}{suffix}"

    def write(self, batch: Mapping[str, TableRows]) -> None:
        """Append one batch's rows of each table, durably; on failure, nothing of the batch is
        left in the files and the error is raised."""
        marks: list[tuple[str, Path, int]] = []  # (table, file, size before this batch)
        try:
            for table, data in batch.items():
                if not data.rows:
                    continue
                path = self.path_for(table)
                new = table not in self.files
                # a new file must not exist yet: a run never appends to another run's file
                with path.open("xb" if new else "r+b") as f:
                    f.seek(0, os.SEEK_END)
                    marks.append((table, path, f.tell()))
                    if new:
                        self.files[table] = path
                    f.write(self._encode(data, header=new))
                    f.flush()
                    os.fsync(f.fileno())
                if new:
                    _fsync_directory(self.directory)
        except BaseException:
            self._cut_back(marks)
            raise
        for table, data in batch.items():
            if data.rows:
                self.rows[table] = self.rows.get(table, 0) + len(data.rows)

    def _cut_back(self, marks: list[tuple[str, Path, int]]) -> None:
        for table, path, size in marks:
            try:
                if size == 0:
                    path.unlink(missing_ok=True)
                    self.files.pop(table, None)
                else:
                    os.truncate(path, size)
            except OSError:
                pass  # the original error is the one to report

    def _encode(self, data: TableRows, header: bool) -> bytes:
        lines = [",".join(_quote(c) for c in data.columns)] if header else []
        lines.extend(",".join(_field(v) for v in row) for row in data.rows)
        raw = ("\n".join(lines) + "\n").encode()
        return gzip.compress(raw, compresslevel=6) if self.compress else raw


def _field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return '"true"' if value else '"false"'
    if isinstance(value, datetime):
        return _quote(value.isoformat())
    return _quote(str(value))


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _fsync_directory(directory: Path) -> None:
    """A new file's directory entry reaches the disk too (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
