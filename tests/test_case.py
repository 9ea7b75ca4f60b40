"""The case store keeps rows as typed, survives odd values, and exports Parquet."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from deminer.case import Case, to_utc
from deminer.model import TABLES


def test_every_table_is_created(tmp_path: Path) -> None:
    with Case(tmp_path) as case:
        names = {r["table_name"] for r in case.query(
            "SELECT table_name FROM information_schema.tables")}
    assert set(TABLES) <= names


def test_rows_are_coerced_not_rejected() -> None:
    with Case(None) as case:
        case.add("processes", [
            {"host": "h", "pid": "42", "cmdline": b"x".decode(), "cpu_percent": "97.5",
             "exe_deleted": 1, "ts": "2024-05-01T10:00:00Z", "unknown_column": "ignored"},
            {"host": "h", "pid": "not a number", "ts": 1714557600, "rss": 2**70},
        ])
        rows = case.query("SELECT pid, cpu_percent, exe_deleted, ts, rss FROM processes ORDER BY ts")
    assert rows[0]["pid"] == 42 and rows[0]["cpu_percent"] == 97.5 and rows[0]["exe_deleted"] is True
    assert rows[0]["ts"] == dt.datetime(2024, 5, 1, 10, 0)
    assert rows[1]["pid"] is None and rows[1]["rss"] is None
    assert rows[1]["ts"] == dt.datetime(2024, 5, 1, 10, 0)


def test_to_utc_converts_offsets() -> None:
    assert to_utc("2024-05-01T12:00:00+02:00") == dt.datetime(2024, 5, 1, 10, 0)
    assert to_utc("garbage") is None and to_utc("") is None


def test_case_persists_and_exports_parquet(tmp_path: Path) -> None:
    with Case(tmp_path / "c") as case:
        case.add("dns", [{"host": "h", "qname": "pool.minexmr.com", "answers": ["1.2.3.4"]}])
        out = case.export_parquet()
    with Case(tmp_path / "c") as again:
        assert again.count("dns") == 1
    rows = duckdb.sql(f"SELECT qname, answers FROM '{out / 'dns' / 'data.parquet'}'").fetchall()
    assert rows == [("pool.minexmr.com", ["1.2.3.4"])]


def test_ip_hosts_view_maps_addresses_to_hosts() -> None:
    with Case(None) as case:
        case.add("hosts", [{"host": "web-01", "ips": ["10.0.0.5", "192.0.2.7"]},
                           {"host": "db-01", "ips": ["10.0.0.6"]}, {"host": "noip"}])
        rows = case.query("SELECT ip, host FROM ip_hosts ORDER BY ip")
    assert rows == [{"ip": "10.0.0.5", "host": "web-01"}, {"ip": "10.0.0.6", "host": "db-01"},
                    {"ip": "192.0.2.7", "host": "web-01"}]


def test_arrow_batches_insert_by_column_name_after_pending_rows() -> None:
    import pyarrow as pa
    with Case(None) as case:
        case.add("events", [{"host": "a", "event": "first"}])
        batch = pa.table({"event": ["second", "third"], "host": ["b", "c"],
                          "not_a_column": [1, 2]})
        assert case.add("events", batch) == 2
        assert case.add("events", pa.table({"event": pa.array([], pa.string())})) == 0
        rows = case.query("SELECT host, event FROM events ORDER BY rowid")
    assert rows == [{"host": "a", "event": "first"}, {"host": "b", "event": "second"},
                    {"host": "c", "event": "third"}]


def test_arrow_batches_are_conformed_and_gathered_with_dict_rows() -> None:
    import pyarrow as pa

    from deminer.case import conform
    narrow = pa.table({"pid": pa.array([7], pa.int32()), "name": ["kswapd0"], "junk": [1]})
    wide = conform("processes", narrow)
    assert wide.schema.field("pid").type == pa.int64() and "junk" not in wide.column_names
    assert wide.num_columns == len(TABLES["processes"].names)
    with Case(None) as case:
        case.add("processes", [{"host": "a", "pid": 1, "name": "init"}])
        case.add("processes", narrow)
        case.add("processes", [{"host": "b", "pid": 2, "name": "sshd"}])
        rows = case.query("SELECT host, pid, name FROM processes ORDER BY rowid")
    assert rows == [{"host": "a", "pid": 1, "name": "init"}, {"host": None, "pid": 7, "name": "kswapd0"},
                    {"host": "b", "pid": 2, "name": "sshd"}]


def test_writes_after_a_half_read_result(tmp_path: Path) -> None:
    # DuckDB 2 refuses to register a table on a connection whose last result was not read to
    # its end; ``count`` (fetchone) and a caller's own half-read cursor must not break ingest.
    import pyarrow as pa

    with Case(tmp_path) as case:
        case.add("errors", [{"source": "a", "message": "m"}])
        assert case.count("errors") == 1
        case.add("errors", [{"source": "b", "message": "m"}])
        assert case.count("errors") == 2
        half = case.db.execute("SELECT * FROM range(100000)")
        assert half.fetchone() == (0,)
        case.add("errors", pa.table({"source": ["c"], "message": ["m"]}))
        with case.registered("_names", pa.table({"source": ["a", "c", "z"]})) as db:
            seen = db.execute("SELECT n.source FROM _names n JOIN errors e USING (source) "
                              "ORDER BY 1").fetchall()
    assert seen == [("a",), ("c",)]


def _memory_limit(case: Case) -> str:
    row = case.query("SELECT current_setting('memory_limit') AS m")[0]
    return str(row["m"])


def test_a_case_on_disk_caps_its_working_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEMINER_MEMORY_LIMIT", raising=False)
    with Case(tmp_path / "a") as case:
        assert _memory_limit(case) == "953.6 MiB"              # DEFAULT_MEMORY_LIMIT, 1GB
    with Case(tmp_path / "b", memory_limit="300MB") as case:
        assert _memory_limit(case) == "286.1 MiB"
    monkeypatch.setenv("DEMINER_MEMORY_LIMIT", "2GB")
    with Case(tmp_path / "c") as case:
        assert _memory_limit(case) == "1.8 GiB"
    monkeypatch.delenv("DEMINER_MEMORY_LIMIT")
    with Case(None) as case:           # in memory the tables themselves would spill: no cap
        assert _memory_limit(case) != "953.6 MiB"
    with pytest.raises(ValueError, match="'lots'"):
        Case(tmp_path / "d", memory_limit="lots")
    assert not (tmp_path / "d").exists()


def test_queries_bigger_than_the_cap_spill_instead_of_failing(tmp_path: Path) -> None:
    import pyarrow as pa

    n = 1_400_000
    with Case(tmp_path, memory_limit="256MB") as case:
        for start in range(0, n, 200_000):
            ids = range(start, start + 200_000)
            case.add("events", pa.table({"source": [f"s{i % 7}" for i in ids],
                                         "data": [f"{i:08d}" + "x" * 200 for i in ids],
                                         "record_id": list(ids)}))
        # A sort and a distinct over 294 MB of text, more than the cap. (Far smaller caps
        # than this fail in DuckDB's sort: one reason the default is 1GB.)
        rows = case.query("SELECT count(DISTINCT data) AS d, max(record_id) AS m FROM "
                          "(SELECT data, record_id FROM events ORDER BY data DESC)")
    assert rows == [{"d": n, "m": n - 1}]


def test_a_query_that_cannot_fit_the_cap_runs_once_above_it(tmp_path: Path) -> None:
    import pyarrow as pa

    n = 400_000
    with Case(tmp_path) as case:
        ids = range(n)
        case.add("events", pa.table({"data": [f"{i:08d}" + "x" * 200 for i in ids],
                                     "record_id": list(ids)}))
    with Case(tmp_path, memory_limit="48MB") as case:     # too small for DuckDB's sort
        rows = case.query("SELECT max(record_id) AS m FROM "
                          "(SELECT data, record_id FROM events ORDER BY data DESC)")
        assert rows == [{"m": n - 1}] and case.uncapped == 1
        assert _memory_limit(case) == "45.7 MiB"             # the cap is back for what follows
        with pytest.raises(duckdb.OutOfMemoryException):      # only query() retries
            case.db.execute("SELECT max(record_id) FROM "
                            "(SELECT data, record_id FROM events ORDER BY data DESC)").fetchall()


def test_a_case_in_memory_extracts_into_a_temporary_folder_not_the_working_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zipfile

    from deminer.sources.ingest import ingest

    archive = tmp_path / "logs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("var/log/auth.log", "Mar 30 15:00:01 web1 sshd[100]: Failed password for root "
                                       "from 203.0.113.7 port 4242 ssh2\n")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    case = Case(None)
    ingest(case, [archive])
    assert case.count("events") == 1
    scratch = case.evidence_dir
    assert scratch.is_dir() and any(scratch.rglob("auth.log")) and not scratch.is_relative_to(work)
    case.close()
    assert list(work.iterdir()) == [] and not scratch.exists()
