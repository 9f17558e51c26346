"""A segment defined in a real PostgreSQL database, read by a real tap, delivered to the
local Omnisend server: `tap-postgres --catalog ... | target-omnisend --config ...`.

A throwaway cluster (initdb in a temp dir, 127.0.0.1 on a free port, its socket in the
temp dir) holds a `customers` table with realistic flaws (mixed-case, padded, invalid
and missing emails, unicode names, lower-case and unknown country codes) and a VIEW
`vip_buyers` whose WHERE clause *is* the segment. Only the view's stream is selected.
The contacts on the server must be exactly the view's rows with a valid email,
lower-cased; the view's other rows must be in the rejected-records file.

Needs the PostgreSQL server binaries (`.ci/run` installs Debian's `postgresql`) and
meltanolabs-tap-postgres in its own venv (`make test` creates .venv-tap-postgres and
sets TAP_POSTGRES_BIN). Without them the test is skipped, except under CI, where that
is a failure.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import API_KEY
from tests.harness import REPO, TARGET_BIN, read_jsonl, stored_email
from tests.omnisend_server import OmnisendServer
from tests.readme import readme_code_blocks, readme_meltano_blocks

pytestmark = pytest.mark.e2e

VIP_THRESHOLD = 5000
TWIN = "twin.account@example.com"  # two customer rows, one person: one contact
STREAM = "public-vip_buyers"  # tap-postgres names streams <schema>-<table or view>


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} — CI must install it (.ci/run, make test)")
    pytest.skip(reason)


def postgres_bindir() -> Path | None:
    """Debian keeps the server binaries out of PATH, under /usr/lib/postgresql/<v>/bin."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def tap_postgres_bin() -> Path | None:
    configured = os.environ.get("TAP_POSTGRES_BIN")
    candidates = [configured] if configured else []
    candidates += [str(REPO / ".venv-tap-postgres" / "bin" / "tap-postgres")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    found = shutil.which("tap-postgres")
    return Path(found) if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    bindir: Path
    root: Path
    port: int
    as_user: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    def run(self, *args: str, stdin: str | None = None) -> str:
        """A server binary, as the cluster's OS user (postgres refuses to run as root)."""
        proc = subprocess.run(
            [*self.as_user, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"{args[0]} failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        return proc.stdout

    def psql(self, database: str, sql: str) -> str:
        return self.run(
            str(self.bindir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.root),  # the unix socket, not TCP: works before any password exists
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            stdin=sql,
        )

    def rows(self, database: str, query: str) -> list[dict[str, str]]:
        out = self.psql(database, f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)")
        return list(csv.DictReader(io.StringIO(out)))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bindir = postgres_bindir()
    if bindir is None:
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
    as_user: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as 'postgres'
        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = None
        if owner is None or runuser is None:
            _unavailable("running as root without a 'postgres' OS user or runuser")
        as_user = [str(runuser), "-u", "postgres", "--"]
    # /tmp, not $TMPDIR: the postgres user must reach it, and socket paths are short.
    root = Path(tempfile.mkdtemp(prefix="omnisend-pg-", dir="/tmp" if owner else None))
    try:
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        cluster = Cluster(bindir, root, 0, as_user)
        cluster.run(
            str(bindir / "initdb"),
            "-D",
            str(cluster.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        for attempt in range(3):  # a free port can be taken before the server binds it
            cluster.port = free_port()
            options = (
                f"-p {cluster.port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories={root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                cluster.run(
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(cluster.data),
                    "-l",
                    str(root / "server.log"),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                )
                break
            except AssertionError:
                if attempt == 2:
                    raise AssertionError((root / "server.log").read_text()[-3000:]) from None
        try:
            cluster.psql("postgres", "CREATE DATABASE shop;")
            cluster.psql("shop", seed_sql())
            yield cluster
        finally:
            with contextlib.suppress(AssertionError, subprocess.SubprocessError):
                cluster.run(
                    str(bindir / "pg_ctl"), "-D", str(cluster.data), "-m", "immediate", "stop"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- the source data ---------------------------------------------------------------------

FIRST = ["Emma", "Zoë", "Łukasz", "美咲", "José", "Ærin", "Noa", "Siobhán", "Oğuz", "Amélie",
         "Даша", "Liam", "Chloé", "Søren", "Ana", "Mateo"]  # fmt: skip
LAST = ["Müller", "O'Brien", "Kowalski", "Rossi", "כהן", "García", "Novák", "Dubois",
        "Nguyễn", "Smith", "Østergaard", "Yılmaz", "Петрова", "Tanaka"]  # fmt: skip  # noqa: RUF001
CITIES = [("Berlin", "DE"), ("Vilnius", "lt"), ("Lyon", "FR"), ("Tel Aviv", "IL"),
          ("Kraków", "pl"), ("Osaka", "JP"), ("Austin", "US"), ("Cork", "IE"),
          ("Atlantis", "XX"), ("São Paulo", "BR"), ("Nowhere", None)]  # fmt: skip
BROKEN_EMAILS = ["not-an-email", "jane.doe@", "@example.com", "two@@example.com",
                 "john doe@example.com", "mia@example", "max@exa_mple.com", "", "   ",
                 "ann..lee@example.com"]  # fmt: skip


def _ascii(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name.lower())
    return "".join(ch for ch in decomposed if ch.isascii() and ch.isalnum())


def is_broken(email: str | None) -> bool:
    """The source's own verdict: rows made broken on purpose (independent of the target)."""
    return email is None or email.strip() in {e.strip() for e in BROKEN_EMAILS}


def customers(count: int = 400, seed: int = 20260315) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for n in range(1, count + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        city, code = rng.choice(CITIES)
        local = f"{_ascii(first) or 'customer'}.{_ascii(last) or 'vip'}{n}"
        email: str | None = f"{local}@{rng.choice(['example.com', 'shop.example.net'])}"
        roll = rng.random()
        if roll < 0.12:
            email = email.upper()
        elif roll < 0.2:
            email = f"  {email.title()} "
        elif roll < 0.27:
            email = rng.choice(BROKEN_EMAILS)
        elif roll < 0.31:
            email = None
        rows.append(
            {
                "customer_id": n,
                "email": email,
                "first_name": first,
                "last_name": last,
                "city": city,
                "country_code": code,
                "lifetime_value": round(
                    rng.choice([rng.uniform(0, 4999), rng.uniform(0, 30000)]), 2
                ),
                "orders_count": rng.randint(0, 120),
                "loyalty_tier": rng.choice(["bronze", "silver", "gold", "platinum"]),
                "birthdate": None
                if rng.random() < 0.3
                else f"{rng.randint(1940, 2006)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
            }
        )
    # Realistic edges inside the segment: one customer with two accounts whose emails
    # differ only by case (Omnisend would make them one contact), and one VIP exactly
    # at the threshold (the WHERE clause says '>': not in the segment).
    rows[10].update(email=TWIN.title(), lifetime_value=12000.0)
    rows[11].update(email=TWIN, lifetime_value=13000.0)
    rows[12].update(email="edge.case@example.com", lifetime_value=float(VIP_THRESHOLD))
    return rows


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def seed_sql() -> str:
    rows = customers()
    columns = list(rows[0])
    values = ",\n".join("(" + ", ".join(_literal(row[c]) for c in columns) + ")" for row in rows)
    return f"""
CREATE TABLE customers (
    customer_id    integer PRIMARY KEY,
    email          text,
    first_name     text NOT NULL,
    last_name      text NOT NULL,
    city           text,
    country_code   char(2),
    lifetime_value numeric(12, 2) NOT NULL,
    orders_count   integer NOT NULL,
    loyalty_tier   text NOT NULL,
    birthdate      date,
    created_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers ({", ".join(columns)}) VALUES
{values};
-- The segment: a view, so its definition lives in the warehouse, not in the pipeline.
CREATE VIEW vip_buyers AS
    SELECT customer_id, email, first_name, last_name, city, country_code,
           lifetime_value, loyalty_tier, birthdate
    FROM customers
    WHERE lifetime_value > {VIP_THRESHOLD};
"""


# -- the pipeline ----------------------------------------------------------------------


def tap_config(cluster: Cluster, workdir: Path, database: str = "shop") -> Path:
    path = workdir / "tap.json"
    path.write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "port": cluster.port,
                "user": "postgres",
                "password": "unused-trust-auth",
                "database": database,
                "filter_schemas": ["public"],
            }
        )
    )
    return path


def select_only(catalog: dict[str, Any], stream_id: str) -> dict[str, Any]:
    """Mark one stream selected and every other one deselected (Singer catalog metadata)."""
    found = False
    for stream in catalog["streams"]:
        chosen = stream["tap_stream_id"] == stream_id
        found = found or chosen
        for entry in stream.get("metadata", []):
            if entry.get("breadcrumb") == []:
                entry["metadata"]["selected"] = chosen
    assert found, [s["tap_stream_id"] for s in catalog["streams"]]
    return catalog


def discover(tap: Path, tap_cfg: Path, workdir: Path) -> Path:
    """`tap-postgres --discover`, then a catalog with only the view's stream selected."""
    discovered = subprocess.run(
        [str(tap), "--config", str(tap_cfg), "--discover"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert discovered.returncode == 0, discovered.stderr[-3000:]
    catalog = json.loads(discovered.stdout)
    streams = {s["tap_stream_id"] for s in catalog["streams"]}
    assert {STREAM, "public-customers"} <= streams  # views are discovered like tables
    path = workdir / "catalog.json"
    path.write_text(json.dumps(select_only(catalog, STREAM)))
    return path


def run_pipeline(
    tap: Path, tap_cfg: Path, catalog: Path, target_cfg: dict[str, Any], workdir: Path
) -> tuple[int, int, str, str]:
    """`tap-postgres | target-omnisend`: (tap exit, target exit, target stdout, stderr)."""
    target_cfg_path = workdir / "target.json"
    target_cfg_path.write_text(json.dumps(target_cfg))
    with (workdir / "tap.log").open("w") as tap_log:
        tap_proc = subprocess.Popen(
            [str(tap), "--config", str(tap_cfg), "--catalog", str(catalog)],
            stdout=subprocess.PIPE,
            stderr=tap_log,
            cwd=workdir,
        )
        target_proc = subprocess.Popen(
            [str(TARGET_BIN), "--config", str(target_cfg_path)],
            stdin=tap_proc.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
        )
        assert tap_proc.stdout is not None
        tap_proc.stdout.close()  # the target owns the pipe now
        out, err = target_proc.communicate(timeout=300)
        tap_code = tap_proc.wait(timeout=60)
    return tap_code, target_proc.returncode, out.decode(), err.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def tap() -> Path:
    found = tap_postgres_bin()
    if found is None:
        _unavailable("tap-postgres not installed (make test creates .venv-tap-postgres)")
    return found


def test_vip_view_segment_from_postgres_is_delivered(
    cluster: Cluster, tap: Path, server: OmnisendServer, tmp_path: Path
) -> None:
    tap_cfg = tap_config(cluster, tmp_path)
    catalog_path = discover(tap, tap_cfg, tmp_path)

    rejected_path = tmp_path / "rejected.jsonl"
    target_cfg = {
        "api_key": API_KEY,
        "api_url": server.url,
        "rejected_records_path": str(rejected_path),
        "fingerprint_store_path": str(tmp_path / "fingerprints.sqlite"),
        "batch_poll_interval": 0.05,
        "custom_properties": {"lifetime_value": "lifetime_value", "loyalty_tier": "loyalty_tier"},
    }
    tap_code, code, out, err = run_pipeline(tap, tap_cfg, catalog_path, target_cfg, tmp_path)
    assert tap_code == 0, (tmp_path / "tap.log").read_text()[-3000:]
    assert code == 0, err[-3000:]

    # What the view holds, read from Postgres itself, independently of the pipeline.
    view = cluster.rows("shop", "SELECT customer_id, email FROM vip_buyers")
    table = cluster.rows("shop", "SELECT count(*) AS n FROM customers")
    assert 100 < len(view) < int(table[0]["n"])  # the WHERE clause really selects
    emails = {int(r["customer_id"]): r["email"] or None for r in view}  # csv: NULL -> ""
    broken_ids = {cid for cid, email in emails.items() if is_broken(email)}
    deliverable = {e.strip().lower() for cid, e in emails.items() if cid not in broken_ids}
    assert len(broken_ids) > 10 and len(deliverable) > 100

    stored = [stored_email(c) for c in server.contacts()]
    assert sorted(stored) == sorted(deliverable)  # exactly the view, no duplicates
    assert all(email == email.lower().strip() for email in stored)
    assert "edge.case@example.com" not in stored  # lifetime_value == threshold: not a VIP

    rejected = read_jsonl(rejected_path)
    assert {r["record"]["customer_id"] for r in rejected} == broken_ids
    assert {r["stream"] for r in rejected} == {STREAM}
    assert {r["code"] for r in rejected} == {"missing_email", "invalid_email"}
    merged = len(view) - len(stored) - len(rejected)
    assert merged == 1  # the twin accounts, one contact
    assert f"received={len(view)} delivered={len(stored)} rejected={len(rejected)}" in err, err[
        -3000:
    ]
    assert any(json.loads(line).get("bookmarks") for line in out.splitlines() if line.strip())

    # Every field survives Postgres -> tap -> target -> Omnisend (unicode names, numerics,
    # dates, country codes normalised or dropped when unknown).
    twins = {cid for cid, email in emails.items() if (email or "").lower() == TWIN}
    checked = 0
    for row in cluster.rows("shop", "SELECT * FROM vip_buyers ORDER BY customer_id"):
        if int(row["customer_id"]) in broken_ids | twins:
            continue
        contact = server.contact(row["email"].strip().lower())
        assert contact is not None, row["customer_id"]
        assert (contact["firstName"], contact["lastName"]) == (row["first_name"], row["last_name"])
        assert contact.get("city") == (row["city"] or None)
        code = row["country_code"].upper()
        assert contact.get("countryCode") == (code if code and code != "XX" else None), row
        assert contact.get("birthdate") == (row["birthdate"] or None)
        assert contact["customProperties"] == {
            "lifetime_value": float(row["lifetime_value"]),
            "loyalty_tier": row["loyalty_tier"],
        }
        assert contact["tags"] == [f"segment:{STREAM}"]
        checked += 1
    assert checked == len(stored) - 1


def test_segment_changes_in_the_view_reach_omnisend_on_the_next_run(
    cluster: Cluster, tap: Path, server: OmnisendServer, tmp_path: Path
) -> None:
    """The view is re-read in full each run; only what changed is sent again, and only
    a contact new to the segment costs a tag call."""
    cluster.psql("postgres", "CREATE DATABASE shop_rerun TEMPLATE shop;")
    try:
        tap_cfg = tap_config(cluster, tmp_path, database="shop_rerun")
        catalog = discover(tap, tap_cfg, tmp_path)
        target_cfg = {
            "api_key": API_KEY,
            "api_url": server.url,
            "rejected_records_path": str(tmp_path / "rejected.jsonl"),
            "fingerprint_store_path": str(tmp_path / "fingerprints.sqlite"),
            "batch_poll_interval": 0.05,
        }
        first = run_pipeline(tap, tap_cfg, catalog, target_cfg, tmp_path)
        assert first[:2] == (0, 0), first[3][-3000:]
        members = len(server.contacts())
        batches_before = len(server.batches())
        tag_calls_before = server.count(method="POST", path_prefix="/contacts/tags")

        joiner = cluster.rows(
            "shop_rerun",
            "SELECT customer_id, lower(trim(email)) AS email FROM customers "
            f"WHERE lifetime_value < {VIP_THRESHOLD} AND email ~ '^[a-z0-9.]+@example\\.com$' "
            "ORDER BY customer_id LIMIT 1",
        )[0]
        renamed = cluster.rows(
            "shop_rerun",
            "SELECT customer_id, lower(trim(email)) AS email FROM vip_buyers "
            f"WHERE email ~ '^[a-z0-9.]+@example\\.com$' AND lower(email) <> '{TWIN}' "
            "ORDER BY customer_id LIMIT 1",
        )[0]
        cluster.psql(
            "shop_rerun",
            f"UPDATE customers SET lifetime_value = 25000 WHERE customer_id = "
            f"{joiner['customer_id']};\n"
            f"UPDATE customers SET first_name = 'Zoë-Renée' WHERE customer_id = "
            f"{renamed['customer_id']};",
        )
        second = run_pipeline(tap, tap_cfg, catalog, target_cfg, tmp_path)
        assert second[:2] == (0, 0), second[3][-3000:]

        new_batches = server.batches()[batches_before:]
        assert sum(b["totalCount"] for b in new_batches) == 2  # the joiner and the renamed
        assert len(server.contacts()) == members + 1
        assert server.contact(joiner["email"])["tags"] == [f"segment:{STREAM}"]
        assert server.contact(renamed["email"])["firstName"] == "Zoë-Renée"
        tag_calls = server.count(method="POST", path_prefix="/contacts/tags") - tag_calls_before
        assert tag_calls == 1  # the joiner only; the renamed member is tagged already
    finally:
        cluster.psql("postgres", "DROP DATABASE IF EXISTS shop_rerun WITH (FORCE);")


# -- the README's example, as written ------------------------------------------------------

POSTGRES_MARKER = "<!-- postgres-example:"


def readme_postgres_blocks() -> dict[str, str]:
    """The README's Postgres example: its SQL, YAML and command blocks, by language."""
    return {
        language: body
        for before, language, body in readme_code_blocks(with_language=True)
        if before.startswith(POSTGRES_MARKER)
    }


def readme_loader_commands() -> str:
    """The README's Meltano commands that make a project, add the loader and give it
    the API key."""
    first = readme_meltano_blocks()[0]
    lines = first.splitlines()
    end = next(i for i, line in enumerate(lines) if "target-omnisend api_key" in line)
    return "\n".join(lines[: end + 1]) + "\n"


def merge_plugins(meltano_yml: Path, fragment: str) -> None:
    """What the README asks a user to do with its YAML block: add the extractor, and the
    `config` keys to the loader entry `meltano add` wrote."""
    project = yaml.safe_load(meltano_yml.read_text())
    plugins = yaml.safe_load(fragment)["plugins"]
    project["plugins"].setdefault("extractors", []).extend(plugins["extractors"])
    for loader in plugins["loaders"]:
        [entry] = [p for p in project["plugins"]["loaders"] if p["name"] == loader["name"]]
        entry.setdefault("config", {}).update(loader["config"])
    meltano_yml.write_text(yaml.safe_dump(project, sort_keys=False, allow_unicode=True))


def test_readme_postgres_example_runs_as_written_under_meltano(
    cluster: Cluster, server: OmnisendServer, tmp_path: Path
) -> None:
    """The README's SQL, YAML and commands, exactly as written, in a project made with
    the README's Meltano commands; only where the database is differs (an environment
    variable per setting, as Meltano reads them)."""
    meltano_bin = os.environ.get("MELTANO_BIN") or shutil.which("meltano")
    if not meltano_bin:
        _unavailable("meltano not installed (make test installs it)")
    blocks = readme_postgres_blocks()
    assert set(blocks) == {"sql", "yaml", "bash"}, list(blocks)
    database = "readme_shop"
    cluster.psql("postgres", f"CREATE DATABASE {database} TEMPLATE shop;")
    try:
        cluster.psql(database, "DROP VIEW vip_buyers;\n" + blocks["sql"])
        cluster.psql(
            database,
            "CREATE ROLE segments LOGIN PASSWORD 'segments-pw';\n"
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO segments;",
        )
        env = {
            **os.environ,
            "PATH": f"{Path(meltano_bin).parent}{os.pathsep}{os.environ['PATH']}",
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "CHECKOUT": str(REPO),
            "OMNISEND_API_KEY": API_KEY,
            "SEGMENTS_DB_PASSWORD": "segments-pw",
            # where this test's database and Omnisend are, instead of db.internal:5432/shop
            # and api.omnisend.com
            "TAP_POSTGRES_HOST": "127.0.0.1",
            "TAP_POSTGRES_PORT": str(cluster.port),
            "TAP_POSTGRES_DATABASE": database,
            "TARGET_OMNISEND_API_URL": server.url,
            "UV_NO_CACHE": "1",
        }

        def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
            proc = subprocess.run(
                ["bash", "-c", "set -euo pipefail -v\n" + script],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=1200,
                check=False,
            )
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
            return proc

        bash(readme_loader_commands(), tmp_path)
        project = tmp_path / "my-segments"
        merge_plugins(project / "meltano.yml", blocks["yaml"])
        proc = bash(blocks["bash"], project)

        view = cluster.rows(database, "SELECT email FROM vip_buyers")
        deliverable = {
            r["email"].strip().lower() for r in view if not is_broken(r["email"] or None)
        }
        stored = {stored_email(c) for c in server.contacts()}
        assert len(deliverable) > 100
        assert stored == deliverable, proc.stderr[-3000:]
        assert {tag for c in server.contacts() for tag in c["tags"]} == {f"segment:{STREAM}"}
        assert [s["name"] for s in server.segments()] == [STREAM]
        assert "lifetime_value" in server.contact(next(iter(stored)))["customProperties"]
        assert "No record was received" not in proc.stderr
        assert API_KEY not in proc.stdout + proc.stderr
    finally:
        cluster.psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE);")
        with contextlib.suppress(AssertionError):
            cluster.psql("postgres", "DROP ROLE IF EXISTS segments;")


def test_a_tap_sending_batch_messages_delivers_the_same_segment_and_mirror_keeps_it(
    cluster: Cluster, tap: Path, server: OmnisendServer, tmp_path: Path
) -> None:
    """tap-postgres with `batch_config` sends the view's rows as BATCH messages pointing
    at gzipped JSONL files: the target delivers exactly the same segment as from RECORD
    messages, rejects the same rows, emits STATE, and a mirror re-run untags nobody."""
    tap_cfg = tap_config(cluster, tmp_path)
    catalog = discover(tap, tap_cfg, tmp_path)
    batches = tmp_path / "batches"
    settings = json.loads(tap_cfg.read_text())
    settings["batch_config"] = {
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "storage": {"root": batches.as_uri(), "prefix": "vip-"},
        "batch_size": 50,
    }
    tap_cfg.write_text(json.dumps(settings))
    target_cfg = {
        "api_key": API_KEY,
        "api_url": server.url,
        "rejected_records_path": str(tmp_path / "rejected.jsonl"),
        "fingerprint_store_path": str(tmp_path / "fingerprints.sqlite"),
        "summary_path": str(tmp_path / "summary.json"),
        "batch_poll_interval": 0.05,
        "sync_mode": "mirror",
        "mirror_trigger": "end_of_input",
        "mirror_confirm_runs": 1,
    }
    tap_code, code, out, err = run_pipeline(tap, tap_cfg, catalog, target_cfg, tmp_path)
    assert tap_code == 0, (tmp_path / "tap.log").read_text()[-3000:]
    assert code == 0, err[-3000:]
    assert len(list(batches.glob("vip-*.json.gz"))) > 1, "the tap sent no BATCH messages"

    view = cluster.rows("shop", "SELECT customer_id, email FROM vip_buyers")
    emails = {int(r["customer_id"]): r["email"] or None for r in view}
    broken_ids = {cid for cid, email in emails.items() if is_broken(email)}
    deliverable = {e.strip().lower() for cid, e in emails.items() if cid not in broken_ids}
    assert sorted(stored_email(c) for c in server.contacts()) == sorted(deliverable)
    rejected = read_jsonl(tmp_path / "rejected.jsonl")
    assert {r["record"]["customer_id"] for r in rejected} == broken_ids
    counts = json.loads((tmp_path / "summary.json").read_text())["streams"][STREAM]
    assert counts["received"] == len(view)
    assert any(json.loads(line).get("bookmarks") for line in out.splitlines() if line.strip())
    tag = f"segment:{STREAM}"
    tagged = {stored_email(c) for c in server.contacts() if tag in c["tags"]}
    assert tagged == deliverable

    again = run_pipeline(tap, tap_cfg, catalog, target_cfg, tmp_path)
    assert again[:2] == (0, 0), again[3][-3000:]
    assert {stored_email(c) for c in server.contacts() if tag in c["tags"]} == deliverable
    result = json.loads((tmp_path / "summary.json").read_text())["mirror"][tag]
    assert (result["removed"], result["staged"]) == (0, 0)
