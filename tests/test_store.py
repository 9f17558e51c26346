"""The fingerprint store's one interface, against both backends: an SQLite file and a
schema in a real PostgreSQL server the suite starts itself (`cluster`). What a run
confirms, the next run knows; partitions, staged removals and saved segments behave the
same in both; runs of one pipeline never interleave; every failure is one line naming
the store, never its password."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from target_omnisend.mirror import decide
from target_omnisend.store import (
    LAYOUT_VERSION,
    FingerprintStore,
    ReadOnlyStore,
    StoreError,
    partition_key,
)
from tests.store_backends import PASSWORD, Where, where_for
from tests.test_omnisend_server import eventually
from tests.test_postgres_e2e import cluster  # noqa: F401 (the fixture, started on demand)

TAG = "segment:vip"
FP = {n: bytes([n]) * 16 for n in range(10)}


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    return where_for(request.param, request, tmp_path)


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="target-omnisend")
    return caplog


def test_what_a_run_confirms_the_next_run_knows_and_a_new_store_is_announced(
    where: Where, log: pytest.LogCaptureFixture
) -> None:
    store = where.open()
    part = store.part("vip", (TAG,))
    store.confirm(part, [("a@example.com", FP[1]), ("b@example.com", FP[2])])
    store.confirm(part, [("a@example.com", FP[3])])  # the newer confirmation wins
    store.commit()
    store.close()
    assert [r.getMessage() for r in log.records] == [
        f"Fingerprint store {store.display} is new: every contact is sent, and mirror "
        "removals start staging from this run"
    ]
    log.clear()

    again = where.open()
    assert again.known(again.part("vip"), ["a@example.com", "b@example.com", "c@example.com"]) == {
        "a@example.com": FP[3],
        "b@example.com": FP[2],
    }
    again.close()
    assert log.records == []  # a store that knows this account is not announced


def test_a_store_that_holds_nothing_for_this_account_is_announced_as_empty(
    where: Where, log: pytest.LogCaptureFixture
) -> None:
    where.open(scope="another-account").close()
    log.clear()
    where.open(scope="this-account").close()
    assert "is empty for this account: every contact is sent" in log.text


def test_each_mapping_keeps_its_own_partition(where: Where) -> None:
    first = where.open(config_hash="mapping-1")
    first.confirm(first.part("vip", (TAG,)), [("a@example.com", FP[1])])
    first.close()
    second = where.open(config_hash="mapping-2")
    assert second.is_new_mapping("vip") and not second.is_new_mapping("other")
    part = second.part("vip", (TAG,))
    assert second.known(part, ["a@example.com"]) == {}
    second.confirm(part, [("a@example.com", FP[2])])
    second.close()
    first = where.open(config_hash="mapping-1")
    assert not first.is_new_mapping("vip")
    assert first.known(first.part("vip"), ["a@example.com"]) == {"a@example.com": FP[1]}
    first.close()


def test_forgetting_untagged_members_reaches_every_partition_carrying_the_tag_only(
    where: Where,
) -> None:
    emails = [f"m{n}@example.com" for n in range(1200)]  # more than one IN list
    store = where.open()
    tagged = store.part("vip", (TAG, "crm:vip"))
    other = store.part("newsletter", ("segment:newsletter",))
    for part in (tagged, other):
        store.confirm(part, [(e, FP[1]) for e in emails])
    store.forget_tagged(TAG, emails[:1100])
    assert set(store.known(tagged, emails)) == set(emails[1100:])
    assert set(store.known(other, emails)) == set(emails)
    store.close()


def test_staged_absences_are_replaced_per_tag(where: Where) -> None:
    store = where.open()
    store.record_absences(TAG, {"a@example.com": 1, "b@example.com": 1}, "run-1")
    store.record_absences("segment:other", {"a@example.com": 1}, "run-1")
    store.record_absences(TAG, {"b@example.com": 2}, "run-2")  # a came back
    assert store.absences(TAG, ["a@example.com", "b@example.com"]) == {
        "b@example.com": (2, "run-2")
    }
    assert store.absences("segment:other", ["a@example.com"]) == {"a@example.com": (1, "run-1")}
    store.close()


def test_saved_segments_are_remembered_and_forgotten(where: Where) -> None:
    store = where.open()
    streams = ("vip", "public-vip_buyers", "ünïcode, with a comma")
    store.remember_segment("VIP buyers", "a" * 24, TAG, streams)
    assert store.saved_segment("VIP buyers") == ("a" * 24, TAG, streams)
    store.close()
    store = where.open()
    assert store.saved_segment("VIP buyers") == ("a" * 24, TAG, streams)
    store.forget_segment("VIP buyers")
    assert store.saved_segment("VIP buyers") is None
    store.close()


def test_a_dry_run_reads_the_store_and_writes_nothing(where: Where) -> None:
    store = where.open()
    part = store.part("vip", (TAG,))
    store.confirm(part, [("a@example.com", FP[1])])
    store.record_absences(TAG, {"b@example.com": 1}, "run-1")
    store.close()
    before = where.sql(f"SELECT * FROM {where.table('contact_fingerprints')}")

    dry = where.open(cls=ReadOnlyStore, config_hash="another-mapping")
    assert dry.is_new_mapping("vip")
    dry_part = dry.part("vip", ("segment:changed",))
    dry.confirm(dry_part, [("z@example.com", FP[9])])
    dry.forget_tagged(TAG, ["a@example.com"])
    dry.record_absences(TAG, {}, "run-2")
    dry.remember_segment("x", "b" * 24, TAG, ("vip",))
    dry.commit()
    assert dry.absences(TAG, ["b@example.com"]) == {"b@example.com": (1, "run-1")}
    dry.close()

    assert where.sql(f"SELECT * FROM {where.table('contact_fingerprints')}") == before
    assert where.sql(f"SELECT count(*) FROM {where.table('partitions')}") == [(1,)]
    store = where.open()
    assert store.known(part, ["a@example.com"]) == {"a@example.com": FP[1]}
    assert store.saved_segment("x") is None
    store.close()


def test_a_dry_run_on_a_store_that_does_not_exist_creates_nothing(
    where: Where, log: pytest.LogCaptureFixture
) -> None:
    dry = where.open(cls=ReadOnlyStore)
    assert dry.known(dry.part("vip"), ["a@example.com"]) == {}
    dry.close()
    assert "the dry run diffs as if every contact were new" in log.text
    if where.kind == "sqlite":
        assert not Path(where.path).parent.exists()
    else:
        found = f"SELECT 1 FROM pg_namespace WHERE nspname = '{where.schema}'"
        assert where.sql(found) == []


def test_a_store_from_a_newer_release_is_refused_in_one_line(where: Where) -> None:
    where.open().close()
    where.sql(f"UPDATE {where.table('store_layout')} SET value = '{LAYOUT_VERSION + 1}'")
    for cls in (FingerprintStore, ReadOnlyStore):
        with pytest.raises(StoreError) as refused:
            where.open(cls=cls)
        message = str(refused.value)
        assert "\n" not in message and PASSWORD not in message
        assert f"has layout version {LAYOUT_VERSION + 1}, written by a newer" in message
        assert where.path.split("@")[-1] in message  # names the store


def _readme_sql() -> list[str]:
    """The statements of the README's store SQL block, as a user would paste them."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("<!-- store-sql: run as written by tests/test_store.py")[1]
    sql = block.split("```sql\n", 1)[1].split("```", 1)[0]
    lines = [line for line in sql.splitlines() if not line.startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]


def test_the_readme_sql_shows_what_a_store_knows_and_resets_one_stream(where: Where) -> None:
    store = where.open()
    vip = store.part("vip_buyers", (TAG,))
    other = store.part("newsletter", ("segment:newsletter",))
    store.confirm(vip, [(f"m{n}@example.com", FP[1]) for n in range(3)])
    store.confirm(other, [("n@example.com", FP[2])])
    store.record_absences(TAG, {"m9@example.com": 1}, "run-1")
    store.remember_segment("vip_buyers", "d" * 24, TAG, ("vip_buyers",))
    store.close()

    listing, staged, segments, *resets = _readme_sql()
    assert [(r[0], r[1], r[3]) for r in where.sql(listing)] == [
        ("newsletter", other, 1),
        ("vip_buyers", vip, 3),
    ]
    assert where.sql(staged) == [(TAG, 1, 1)]
    assert where.sql(segments) == [("vip_buyers", "d" * 24, TAG)]
    assert len(resets) == 2
    for statement in resets:
        where.sql(statement)

    store = where.open()
    assert store.known(store.part("vip_buyers"), ["m0@example.com"]) == {}
    assert store.known(store.part("newsletter"), ["n@example.com"]) == {"n@example.com": FP[2]}
    store.close()


# -- concurrency --------------------------------------------------------------------------


def test_two_runs_of_one_pipeline_never_interleave_and_other_pipelines_run_beside(
    where: Where,
) -> None:
    first = where.open()
    assert not where.pipeline_locked()  # opening alone locks nothing
    first.part("vip", (TAG,))
    assert where.pipeline_locked()

    second = where.open(lock_timeout=0)
    with pytest.raises(StoreError) as refused:
        second.part("vip", (TAG,))
    message = str(refused.value)
    assert "another run of this pipeline (stream 'vip') is still using the fingerprint store" in (
        message
    )
    assert "\n" not in message and PASSWORD not in message
    second.part("newsletter")  # another stream: another pipeline, no wait
    second.close()
    other_mapping = where.open(config_hash="other-mapping", lock_timeout=0)
    other_mapping.part("vip")
    other_mapping.close()

    first.close()
    third = where.open(lock_timeout=0)
    third.part("vip")  # released with the first run's close
    third.close()
    assert not where.pipeline_locked()


def test_runs_setting_up_one_new_store_at_the_same_moment_all_succeed(where: Where) -> None:
    """Three pipelines (three streams) whose first runs start together on a new store."""
    start = threading.Barrier(3)
    failures: list[BaseException] = []

    def first_run(stream: str) -> None:
        try:
            start.wait(timeout=30)
            store = where.open()
            store.confirm(store.part(stream, (TAG,)), [("a@example.com", FP[1])])
            store.close()
        except BaseException as exc:  # reported below, with the thread's stream
            failures.append(exc)

    threads = [threading.Thread(target=first_run, args=(s,)) for s in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    store = where.open()
    for stream in ("a", "b", "c"):
        assert store.known(store.part(stream), ["a@example.com"]) == {"a@example.com": FP[1]}
    store.close()


def test_a_second_run_of_one_pipeline_waits_for_the_first_to_close(
    where: Where, log: pytest.LogCaptureFixture
) -> None:
    first = where.open()
    part = first.part("vip", (TAG,))
    first.confirm(part, [("a@example.com", FP[1])])
    second = where.open(lock_timeout=60)
    seen: dict[str, bytes] = {}
    waiter = threading.Thread(
        target=lambda: seen.update(second.known(second.part("vip"), ["a@example.com"]))
    )
    waiter.start()
    assert eventually(lambda: "is using fingerprint store" in log.text, timeout=20)
    assert waiter.is_alive()
    first.close()  # the first run's confirmations are written, then the lock released
    waiter.join(timeout=30)
    assert seen == {"a@example.com": FP[1]}
    second.close()


@pytest.mark.parametrize(("overlapped", "removed"), [((), ["a@example.com"]), (("run-A",), [])])
def test_a_stage_written_by_the_run_it_waited_for_is_not_counted_again(
    overlapped: tuple[str, ...], removed: list[str]
) -> None:
    """Run B waited for run A of the same pipeline: A's stage is B's own, not a second."""
    decision = decide(
        10,
        ["a@example.com"],
        {"a@example.com": (1, "run-A")},
        "run-B",
        max_ratio=1.0,
        confirm_runs=2,
        overlapped=overlapped,
    )
    assert decision.remove == removed
    assert decision.staged == ({} if removed else {"a@example.com": 1})


# -- failures -----------------------------------------------------------------------------


def test_a_lost_postgresql_connection_is_one_line_naming_the_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    where = where_for("postgres", request, tmp_path)
    assert where.cluster is not None
    store = where.open()
    part = store.part("vip", (TAG,))
    where.kill_connections()
    with pytest.raises(StoreError) as failed:
        store.known(part, ["a@example.com"])
    message = str(failed.value)
    assert "\n" not in message and PASSWORD not in message
    assert message.startswith(
        f"the fingerprint store postgresql://postgres:***@127.0.0.1:{where.cluster.port}"
        f"/postgres (schema {where.schema}) failed while reading fingerprints ("
    ), message


def _corrupt_data_pages(path: Path) -> None:
    """Overwrite every page but the first (the header and schema stay readable)."""
    with sqlite3.connect(path) as db:
        page = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    data = bytearray(path.read_bytes())
    for offset in range(page, len(data), page):
        data[offset : offset + page] = b"\xa5" * page
    path.write_bytes(bytes(data))


def test_a_corrupt_sqlite_page_is_one_line_naming_the_file(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    where = where_for("sqlite", request, tmp_path)
    store = where.open()
    part = store.part("vip", (TAG,))
    store.confirm(part, [(f"m{n}@example.com", FP[1]) for n in range(3000)])
    store.close()
    _corrupt_data_pages(Path(where.path))
    with pytest.raises(StoreError) as failed:
        store = where.open()
        store.known(store.part("vip"), ["m1@example.com"])
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"the fingerprint store {where.path} failed while "), message
    assert "malformed" in message


# -- layout versions (SQLite: the only backend with older layouts) --------------------------


def _layout_1_store(path: Path) -> None:
    """A store as the release before layout versions left it, with layout-0 leftovers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = partition_key("scope", "vip", "hash")
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE partitions (
                part TEXT PRIMARY KEY, scope TEXT NOT NULL, stream TEXT NOT NULL,
                config_hash TEXT NOT NULL, tags TEXT NOT NULL, last_used REAL NOT NULL);
            CREATE TABLE contact_fingerprints (part TEXT NOT NULL, email TEXT NOT NULL,
                fp BLOB NOT NULL, PRIMARY KEY (part, email)) WITHOUT ROWID;
            CREATE TABLE mirror_absences (scope TEXT NOT NULL, tag TEXT NOT NULL,
                email TEXT NOT NULL, runs INTEGER NOT NULL, last_run TEXT NOT NULL,
                PRIMARY KEY (scope, tag, email)) WITHOUT ROWID;
            CREATE TABLE saved_segments (scope TEXT NOT NULL, name TEXT NOT NULL,
                segment_id TEXT NOT NULL, tag TEXT NOT NULL, streams TEXT NOT NULL,
                PRIMARY KEY (scope, name)) WITHOUT ROWID;
            CREATE TABLE fingerprints (scope TEXT, stream TEXT, email TEXT, fp BLOB);
            CREATE TABLE scopes (scope TEXT PRIMARY KEY, config_hash TEXT NOT NULL);
            """
        )
        db.execute(
            "INSERT INTO partitions VALUES (?, 'scope', 'vip', 'hash', ?, strftime('%s'))",
            (part, f"{TAG}\0crm:vip"),
        )
        db.execute("INSERT INTO contact_fingerprints VALUES (?, 'a@example.com', ?)", (part, FP[1]))
        db.execute(
            "INSERT INTO mirror_absences VALUES ('scope', ?, 'b@example.com', 1, 'r1')", (TAG,)
        )
        db.execute(
            "INSERT INTO saved_segments VALUES ('scope', 'VIP', ?, ?, ?)",
            ("c" * 24, TAG, "vip\0gold"),
        )
    db.close()


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        names = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    db.close()
    return names


def _check_layout_1_content(store: FingerprintStore) -> None:
    part = store.part("vip", (TAG, "crm:vip"))
    assert store.known(part, ["a@example.com"]) == {"a@example.com": FP[1]}
    assert store.absences(TAG, ["b@example.com"]) == {"b@example.com": (1, "r1")}
    assert store.saved_segment("VIP") == ("c" * 24, TAG, ("vip", "gold"))


def test_a_dry_run_reads_an_older_layout_as_upgraded_and_leaves_the_file_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fp.sqlite"
    _layout_1_store(path)
    before = path.read_bytes()
    dry = ReadOnlyStore(path, "scope", "hash")
    _check_layout_1_content(dry)
    dry.close()
    assert path.read_bytes() == before


def test_an_older_layout_is_upgraded_in_place_and_its_old_tables_removed(
    tmp_path: Path, log: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "fp.sqlite"
    _layout_1_store(path)
    store = FingerprintStore(path, "scope", "hash")
    assert f"upgraded in place from layout 1 to {LAYOUT_VERSION}" in log.text
    _check_layout_1_content(store)
    store.forget_tagged("crm:vip", ["a@example.com"])  # tags were NUL-joined in layout 1
    assert store.known(store.part("vip"), ["a@example.com"]) == {}
    store.close()
    assert _tables(path) == {
        "store_layout",
        "partitions",
        "contact_fingerprints",
        "mirror_absences",
        "saved_segments",
    }
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM store_layout").fetchall() == [(str(LAYOUT_VERSION),)]
    db.close()


def test_a_store_from_the_release_before_partitions_is_upgraded_to_an_empty_store(
    tmp_path: Path, log: pytest.LogCaptureFixture
) -> None:
    """Layout 0 rows cannot be placed in a partition: they go, and one full send follows."""
    path = tmp_path / "fp.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE fingerprints (scope TEXT, stream TEXT, email TEXT, fp BLOB)")
        db.execute("CREATE TABLE scopes (scope TEXT PRIMARY KEY, config_hash TEXT NOT NULL)")
    db.close()
    store = FingerprintStore(path, "scope", "hash")
    assert store.known(store.part("vip", (TAG,)), ["a@example.com"]) == {}
    store.close()
    assert f"upgraded in place from layout 0 to {LAYOUT_VERSION}" in log.text
    assert "fingerprints" not in _tables(path) and "scopes" not in _tables(path)
