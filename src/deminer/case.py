"""The case store: one DuckDB database per case holding the normalized tables of ``model``.

Only this module writes to DuckDB. Sources hand it batches of rows; it gathers them per table
and appends each gathered set as one Arrow table in one statement, so ingest cost is per
gathered batch, not per source batch (small files give many small batches, and every INSERT
on a file database is a commit). Any read goes through ``db`` or ``query``, which write what
is pending first, so nobody sees a stale table.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa

from deminer.case_writer import BackgroundWriter
from deminer.model import TABLES, Table

Row = Mapping[str, Any]

_ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us"),
    "VARCHAR[]": pa.list_(pa.string()),
}


def arrow_schema(table: Table) -> pa.Schema:
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.type]) for c in table.columns])


_SCHEMAS: dict[str, pa.Schema] = {name: arrow_schema(t) for name, t in TABLES.items()}
_STRUCTS: dict[str, pa.DataType] = {name: pa.struct(list(s)) for name, s in _SCHEMAS.items()}
FLUSH_ROWS = 50_000
# DuckDB's working memory: beyond it, it evicts table blocks it already wrote and spills big
# joins and sorts to CASE/case.duckdb.tmp. Its own default is 80 % of RAM, so a case of a
# million EVTX records held 2.3 GB and grew on with the input; capped, the peak stays flat
# at the same speed (BENCHMARKS.md). DEMINER_MEMORY_LIMIT or ``--memory-limit`` change it.
DEFAULT_MEMORY_LIMIT = "1GB"


def _coerce(value: Any, typ: str) -> Any:
    """Make a value fit its column so one odd value cannot fail a whole batch."""
    if value is None:
        return None
    if typ == "VARCHAR":
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates from surrogateescape decoding
                return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            return value
        if isinstance(value, (dict, list)):
            return json.dumps(value, sort_keys=True, default=str)
        return str(value)
    if typ == "BIGINT":
        if isinstance(value, bool):
            return int(value)
        try:
            n = int(value)
        except (TypeError, ValueError):
            return None
        return n if -(2**63) <= n < 2**63 else None
    if typ == "DOUBLE":
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    if typ == "BOOLEAN":
        return bool(value)
    if typ == "TIMESTAMP":
        return to_utc(value)
    if typ == "VARCHAR[]":
        if isinstance(value, str):
            return [value]
        return [str(v) for v in value]
    return value


def to_utc(value: Any) -> dt.datetime | None:
    """A naive UTC datetime from a datetime, epoch seconds or ISO 8601 string."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        stamp: dt.datetime = value
        if stamp.tzinfo is not None:
            stamp = stamp.astimezone(dt.UTC).replace(tzinfo=None)
        return stamp
    if isinstance(value, (int, float)):
        try:
            return dt.datetime.fromtimestamp(float(value), dt.UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            return None
        return to_utc(parsed)
    return None


def rows_to_arrow(table: str, rows: Sequence[Row]) -> pa.Table:
    """Columnar Arrow table for ``rows``; unknown keys are ignored, missing ones are NULL."""
    schema = _SCHEMAS[table]
    try:
        # Fast path: Arrow walks the dicts in C++ (twice as fast as a list per column), when
        # every value already has its column's type, as sources write them.
        return pa.Table.from_struct_array(pa.array(rows, type=_STRUCTS[table]))
    except (pa.ArrowException, TypeError, ValueError, OverflowError, UnicodeError):
        pass
    arrays = []
    for col, fld in zip(TABLES[table].columns, schema, strict=True):
        values = [r.get(col.name) for r in rows]
        try:
            # Fast path: values already have the column's type (the common case).
            arrays.append(pa.array(values, type=fld.type))
        except (pa.ArrowException, TypeError, ValueError, OverflowError, UnicodeError):
            arrays.append(pa.array([_coerce(v, col.type) for v in values], type=fld.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def conform(table: str, arrow: pa.Table) -> pa.Table:
    """``arrow`` with exactly ``table``'s columns and types: missing ones NULL, unknown ones
    dropped, others cast (a source may send any subset, e.g. int32 where BIGINT is stored)."""
    schema = _SCHEMAS[table]
    if arrow.schema.equals(schema):
        return arrow
    have = set(arrow.column_names)
    cols = [arrow.column(f.name).cast(f.type) if f.name in have else pa.nulls(arrow.num_rows, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def _set_memory_limit(db: duckdb.DuckDBPyConnection, limit: str) -> None:
    try:
        db.execute("SET memory_limit = ?", [limit])
    except duckdb.Error as exc:
        raise ValueError(f"memory limit {limit!r}: {exc}") from None


def check_memory_limit(limit: str) -> None:
    """ValueError unless ``limit`` is a size DuckDB reads (checked before long work starts)."""
    with duckdb.connect(":memory:") as db:
        _set_memory_limit(db, limit)


class Case:
    """An open case store. Use as a context manager or call ``close``."""

    def __init__(self, path: Path | str | None, memory_limit: str | None = None) -> None:
        """Open (or create) the store at ``path``/case.duckdb; ``None`` means in memory.

        ``memory_limit`` (DuckDB sizes: ``512MB``, ``4GB``) caps the store's working memory;
        default ``DEMINER_MEMORY_LIMIT``, else ``DEFAULT_MEMORY_LIMIT`` for a case on disk.
        ValueError if the size is not one DuckDB reads.
        """
        self.dir: Path | None = None
        # Per table: batches not yet written, dict rows (a list, extended in place) or Arrow.
        self._pending: dict[str, list[list[Row] | pa.Table]] = {}
        self._pending_rows: dict[str, int] = {}
        self._writer: BackgroundWriter | None = None     # started by the first full batch
        self._scratch: Path | None = None                 # evidence_dir of a case in memory
        self._writer_db: duckdb.DuckDBPyConnection | None = None
        limit = memory_limit or os.environ.get("DEMINER_MEMORY_LIMIT")
        if limit:
            check_memory_limit(limit)        # before anything is created for a bad size
        if path is None:
            # Not capped by default in memory: there the tables themselves would spill (to ./.tmp).
            self._db = duckdb.connect(":memory:")
        else:
            limit = limit or DEFAULT_MEMORY_LIMIT
            self.dir = Path(path)
            self.dir.mkdir(parents=True, exist_ok=True)
            self._db = duckdb.connect(str(self.dir / "case.duckdb"))
        # DuckDB's own default (80 % of RAM), for a query that does not fit the cap.
        default = self._db.execute("SELECT current_setting('memory_limit')").fetchall()
        self._uncapped_limit = str(default[0][0])
        if limit:
            _set_memory_limit(self._db, limit)
        self._limit = limit
        self.uncapped = 0       # queries that had to run above the cap (see ``query``)
        self._db.execute("SET TimeZone = 'UTC'")
        for t in TABLES.values():
            self._db.execute(t.ddl())
        # (sha256, kind, host) of every input read without error, kept in memory so that the
        # per-file "read before?" check during ingest does not force a write per file.
        self._inputs_read: set[tuple[Any, Any, Any]] = set(self._db.execute(
            "SELECT sha256, kind, host FROM inputs WHERE error IS NULL AND sha256 IS NOT NULL").fetchall())
        # SSH logons for the SSH rules: sshd's own lines (auth.log, secure, journald), and a
        # host's audit-log logons by sshd only when none of its sshd lines are in the case (a
        # wiped auth.log): counting both would count one attempt twice.
        self._db.execute(
            "CREATE VIEW IF NOT EXISTS ssh_logons AS "
            "SELECT * FROM events WHERE program LIKE 'sshd%' "
            "AND event IN ('logon_failure', 'logon_success') "
            "UNION ALL SELECT * FROM events a WHERE a.program = 'auditd' "
            "AND a.event IN ('logon_failure', 'logon_success') "
            "AND json_extract_string(TRY_CAST(a.data AS JSON), '$.exe') LIKE '%/sshd' "
            "AND NOT EXISTS (SELECT 1 FROM events s WHERE s.program LIKE 'sshd%' "
            "AND s.host IS NOT DISTINCT FROM a.host)")
        # Network rules attribute flows and lookups to hosts by address through this view.
        self._db.execute(
            "CREATE VIEW IF NOT EXISTS ip_hosts AS "
            "SELECT DISTINCT unnest(ips) AS ip, host FROM hosts WHERE ips IS NOT NULL")

    def __enter__(self) -> Case:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def db(self) -> duckdb.DuckDBPyConnection:
        """The connection, with every pending row written first."""
        self.flush()
        return self._db

    @property
    def evidence_dir(self) -> Path:
        """Where sources put what they extract (collected files, zip members): CASE/evidence,
        or for a case in memory a temporary folder removed with it (never the working folder)."""
        if self.dir is not None:
            return self.dir / "evidence"
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="deminer-evidence-"))
        return self._scratch

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._writer is not None:
                writer, self._writer = self._writer, None
                try:
                    writer.close()
                finally:
                    assert self._writer_db is not None
                    self._writer_db.close()
            self._db.close()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None

    def add(self, table: str, rows: Sequence[Row] | pa.Table) -> int:
        """Append a batch to ``table``: dict rows, or an Arrow table of its columns (any
        subset, by name; a columnar source skips the dict-per-row step). Returns the count.

        Batches are gathered per table and written ``FLUSH_ROWS`` at a time (or when the case
        is read): every INSERT into the case file is a commit, and small ones dominate ingest.
        """
        if table not in TABLES:
            raise KeyError(f"unknown table {table!r}")
        n = rows.num_rows if isinstance(rows, pa.Table) else len(rows)
        if not n:
            return 0
        chunks = self._pending.setdefault(table, [])
        if isinstance(rows, pa.Table):
            chunks.append(conform(table, rows))
        else:
            if table == "inputs":
                self._inputs_read.update((r.get("sha256"), r.get("kind"), r.get("host")) for r in rows
                                         if r.get("sha256") and r.get("error") is None)
            if chunks and isinstance(chunks[-1], list):
                chunks[-1].extend(rows)
            else:
                chunks.append(list(rows))
        self._pending_rows[table] = self._pending_rows.get(table, 0) + n
        if self._pending_rows[table] >= FLUSH_ROWS:
            self._write(table)
        return n

    def flush(self) -> None:
        """Write every pending row (and wait for the background writer to be done)."""
        for table in list(self._pending):
            self._write(table, background=False)
        if self._writer is not None:
            self._writer.drain()

    def _write(self, table: str, background: bool = True) -> None:
        chunks = self._pending.pop(table, [])
        self._pending_rows.pop(table, None)
        if not chunks:
            return
        parts = [c if isinstance(c, pa.Table) else rows_to_arrow(table, c) for c in chunks]
        arrow = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        if background:           # a full batch during ingest: written while parsing goes on
            if self._writer is None:
                # Its own connection, made here: a DuckDB connection is not shared by threads.
                self._writer_db = self._db.cursor()
                self._writer = BackgroundWriter(partial(self._insert, self._writer_db))
            self._writer.submit(table, arrow)
        else:
            if self._writer is not None:
                self._writer.drain()             # keep the order batches were added in
            self._insert(self._db, table, arrow)

    def _insert(self, db: duckdb.DuckDBPyConnection, table: str, arrow: pa.Table) -> None:
        cols = ", ".join(f'"{n}"' for n in TABLES[table].names)
        with self._registered("_batch", arrow, db) as cur:
            cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _batch")

    @contextmanager
    def _registered(self, name: str, arrow: pa.Table,
                    db: duckdb.DuckDBPyConnection | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        # A cursor of its own: DuckDB 2 refuses ``register`` on a connection whose last result
        # was not read to its end (any ``fetchone()``), which would fail the next write.
        cur = (db if db is not None else self._db).cursor()
        try:
            cur.register(name, arrow)
            yield cur
        finally:
            cur.close()

    @contextmanager
    def registered(self, name: str, arrow: pa.Table) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to this case on which ``arrow`` is readable as table ``name``; run the
        queries that join it on the connection yielded (pending rows are written first)."""
        self.flush()
        with self._registered(name, arrow) as cur:
            yield cur

    def read_before(self, sha256: str, kind: str, host: str | None) -> bool:
        """Was an input with these bytes read by this source for this host without error?"""
        return (sha256, kind, host) in self._inputs_read

    def add_batches(self, batches: Iterable[tuple[str, Sequence[Row] | pa.Table]]) -> dict[str, int]:
        """Write ``(table, rows)`` batches as a source yields them; returns rows per table."""
        counts: dict[str, int] = {}
        for table, rows in batches:
            counts[table] = counts.get(table, 0) + self.add(table, rows)
        return counts

    def error(self, source: str, message: str, stage: str = "ingest", host: str | None = None) -> None:
        self.add("errors", [{"host": host, "source": source, "stage": stage, "message": message,
                             "ts": dt.datetime.now(dt.UTC)}])

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Run ``sql`` and return rows as dicts.

        A query that cannot fit the memory cap (a few DuckDB operators cannot spill) is run
        once more without it, rather than lose a rule's findings; ``uncapped`` counts those.
        """
        try:
            return self._rows(self.db.execute(sql, params or []))
        except duckdb.OutOfMemoryException:
            if self._limit is None:
                raise
            self.uncapped += 1
            _set_memory_limit(self._db, self._uncapped_limit)
            try:
                return self._rows(self._db.execute(sql, params or []))
            finally:
                _set_memory_limit(self._db, self._limit)

    @staticmethod
    def _rows(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
        rows = cur.fetchall()
        names = [d[0] for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def count(self, table: str) -> int:
        row = self.db.execute(f"SELECT count(*) FROM {TABLES[table].name}").fetchone()
        return int(row[0]) if row else 0

    def export_parquet(self, out: Path | None = None) -> Path:
        """Write every table to ``out/<table>/data.parquet`` (default ``CASE/parquet``)."""
        if out is None:
            if self.dir is None:
                raise ValueError("an in-memory case needs an explicit output folder")
            out = self.dir / "parquet"
        for name in TABLES:
            folder = out / name
            folder.mkdir(parents=True, exist_ok=True)
            target = str(folder / "data.parquet").replace("'", "''")
            self.db.execute(f"COPY {name} TO '{target}' (FORMAT parquet)")
        return out
