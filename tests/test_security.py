"""Issue 7, security: the API key never leaves the request headers (not in stdout,
stderr, the rejected file, the summary, the dry-run file, the fingerprint store or
--about), emails are masked in the log, the key and profiles go only over TLS (or to
this machine), and no setting or environment variable turns certificate checks off."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.harness import TARGET_BIN, Run, read_jsonl, run_target
from tests.omnisend_server import FaultRule, OmnisendServer
from tests.test_faults import SCHEMA, STREAM, held_emails

pytestmark = pytest.mark.e2e

KEY = "omk-SECRET-7d3f9a1c5e8b-DO-NOT-LOG"
WRONG_KEY = "omk-WRONG-2b8e6f0a4c1d-NOT-ON-SERVER"
KEY_PARTS = (KEY, "7d3f9a1c5e8b", WRONG_KEY, "2b8e6f0a4c1d")  # whole keys and their middles
TLS_DIR = Path(__file__).parent / "data_files" / "tls"
CERT, CERT_KEY = TLS_DIR / "localhost-cert.pem", TLS_DIR / "localhost-key.pem"

EMAILS = [
    "delivered.person@example.com",
    "Mixed.Case.Person@Example.com",
    "refused.person@example.com",
    "dup.person@example.com",
    "dup.person@example.com",
    "bad@@example.com",
    "no-tld@example",
]


@pytest.fixture
def keyed_server() -> Iterator[OmnisendServer]:
    with OmnisendServer(api_keys=(KEY,)) as srv:
        yield srv


@pytest.fixture
def secure_config(keyed_server: OmnisendServer, tmp_path: Path) -> dict[str, Any]:
    return {
        "api_key": KEY,
        "api_url": keyed_server.url,
        "rejected_records_path": str(tmp_path / "rejected.jsonl"),
        "summary_path": str(tmp_path / "summary.json"),
        "fingerprint_store_path": str(tmp_path / "fingerprints.sqlite"),
        "dry_run_path": str(tmp_path / "dry_run.jsonl"),
        "batch_poll_interval": 0.05,
        "max_retries": 1,
    }


def messages() -> list[dict[str, Any]]:
    records = [{"i": i, "email": e, "first_name": f"P{i}"} for i, e in enumerate(EMAILS)]
    return [
        SCHEMA,
        *({"type": "RECORD", "stream": STREAM, "record": r} for r in records),
        {"type": "STATE", "value": {"bookmarks": {STREAM: {"offset": len(records)}}}},
    ]


def artefacts(tmp_path: Path) -> dict[str, bytes]:
    """Everything the run left on disk, including the fingerprint store's files."""
    return {
        p.name: p.read_bytes()
        for p in tmp_path.iterdir()
        if p.is_file() and p.name != "config.json"
    }


def assert_nothing_leaks(result: Run, tmp_path: Path) -> None:
    for part in KEY_PARTS:
        assert part not in result.stdout
        assert part not in result.stderr
        for name, content in artefacts(tmp_path).items():
            assert part.encode() not in content, f"API key in {name}"
    assert "Traceback" not in result.stderr
    for email in EMAILS:
        assert email not in result.stderr, f"unmasked email in the log: {email}"
        assert email.lower().strip() not in result.stderr


def scenario(name: str, server: OmnisendServer, config: dict, tmp_path: Path) -> Run:
    """Run one scenario; return its output."""
    env: dict[str, str] = {}
    args: list[str] | None = None
    cfg: dict[str, Any] | None = config
    if name == "success_with_rejections":
        server.add_fault(FaultRule(kind="item_error", email_pattern="^refused", status=422))
    elif name == "debug_logging":
        env = {"LOGLEVEL": "DEBUG"}
    elif name == "wrong_key":
        config["api_key"] = WRONG_KEY
    elif name == "server_failure_echoing_the_key":
        body = {"title": "Bad Gateway", "detail": f"upstream refused Omnisend-API-Key {KEY}"}
        server.add_fault(FaultRule(method="POST", path="/batches", status=502, body=body))
    elif name == "refusal_echoing_the_key":
        body = {"title": "Bad Request", "detail": f"key {KEY} may not write contacts"}
        server.add_fault(FaultRule(method="POST", path="/batches", status=400, body=body))
    elif name == "dry_run":
        config["dry_run"] = True
    elif name == "config_from_environment":
        cfg, args = None, ["--config", "ENV"]
        # Every setting as a string, numbers too (batch_poll_interval: "0.05"): the SDK
        # converts integers and booleans, the target converts numbers.
        env = {f"TARGET_OMNISEND_{k.upper()}": str(v) for k, v in config.items()}
    return run_target(cfg, messages(), workdir=tmp_path, env=env, args=args)


SCENARIOS = {
    # name: expected exit code
    "success_with_rejections": 0,
    "debug_logging": 0,
    "wrong_key": 1,
    "server_failure_echoing_the_key": 1,
    "refusal_echoing_the_key": 0,
    "dry_run": 0,
    "config_from_environment": 0,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_key_and_full_emails_never_reach_output_or_files(
    name: str, keyed_server: OmnisendServer, secure_config: dict, tmp_path: Path
) -> None:
    result = scenario(name, keyed_server, secure_config, tmp_path)
    assert result.returncode == SCENARIOS[name], result.stderr[-3000:]
    assert_nothing_leaks(result, tmp_path)
    if name in ("success_with_rejections", "debug_logging", "config_from_environment"):
        assert "delivered.person@example.com" in held_emails(keyed_server)
    if name == "success_with_rejections":
        assert "r***@example.com" in result.stderr  # the refused contact, masked
    if name == "refusal_echoing_the_key":
        rejected = read_jsonl(tmp_path / "rejected.jsonl")
        refused = [r for r in rejected if r["code"] == "refused_by_omnisend"]
        assert refused and all("***" in r["reason"] for r in refused)
    if name == "dry_run":
        assert (tmp_path / "dry_run.jsonl").stat().st_size > 0


@pytest.mark.parametrize("fmt", ["json", "markdown"])
def test_about_never_shows_the_key_even_with_a_config(tmp_path: Path, fmt: str) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"api_key": KEY, "api_url": "http://127.0.0.1:9"}))
    out = subprocess.run(
        [str(TARGET_BIN), "--about", f"--format={fmt}", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "api_key" in out.stdout
    for part in KEY_PARTS:
        assert part not in out.stdout + out.stderr


@pytest.mark.parametrize(
    "url",
    [
        "http://api.omnisend.com",
        "HTTP://api.omnisend.com",
        "http://10.1.2.3:8080",
        "http://0.0.0.0:8080",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
        "http://127.0.0.1@evil.example.com",
        "http://[::ffff:a01:203]",
        "ftp://api.omnisend.com",
    ],
)
def test_plain_http_is_refused_unless_the_host_is_this_machine(
    url: str, secure_config: dict, tmp_path: Path
) -> None:
    secure_config["api_url"] = url
    result = run_target(secure_config, messages(), workdir=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "| ERROR" in line]
    assert len(errors) == 1 and "api_url" in errors[0]
    assert_nothing_leaks(result, tmp_path)


# -- redirects: never followed ----------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """Answers like Omnisend's contact list; records the headers it was sent."""

    seen: list[dict[str, str]]

    def do_GET(self) -> None:
        self.server.seen.append(dict(self.headers))  # type: ignore[attr-defined]
        body = json.dumps({"contacts": [], "paging": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def _serve(
    handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", tls: bool = False
) -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer((host, 0), handler)
    httpd.seen = []  # type: ignore[attr-defined]
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(CERT, CERT_KEY)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return httpd


@pytest.mark.parametrize("version", ["v5", "2026-03-15"])
@pytest.mark.parametrize("status", [301, 307, 308])
def test_a_redirect_is_not_followed_so_the_key_stays_with_omnisend(
    version: str, status: int, tmp_path: Path
) -> None:
    elsewhere = _serve(_Recorder, host="127.0.0.2")  # another host on this machine
    target_url = f"http://127.0.0.2:{elsewhere.server_address[1]}"

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Location", target_url + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    redirector = _serve(Redirect)
    try:
        config = {
            "api_key": KEY,
            "api_url": f"http://127.0.0.1:{redirector.server_address[1]}",
            "api_version": version,
            "max_retries": 0,
        }
        result = run_target(config, messages(), workdir=tmp_path)
    finally:
        redirector.shutdown()
        elsewhere.shutdown()
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "| ERROR" in line]
    assert len(errors) == 1 and f"redirect (HTTP {status})" in errors[0]
    assert elsewhere.seen == []  # type: ignore[attr-defined]
    assert_nothing_leaks(result, tmp_path)


# -- TLS: verified, and nothing turns verification off -------------------------------------


@pytest.fixture
def tls_server() -> Iterator[ThreadingHTTPServer]:
    httpd = _serve(_Recorder, tls=True)
    yield httpd
    httpd.shutdown()


def _tls_run(httpd: ThreadingHTTPServer, tmp_path: Path, extra: dict, env: dict) -> Run:
    config = {
        "api_key": KEY,
        "api_url": f"https://127.0.0.1:{httpd.server_address[1]}",
        "max_retries": 0,
        **extra,
    }
    return run_target(config, b"", workdir=tmp_path, env=env)


WOULD_BE_OPT_OUTS: list[tuple[dict[str, Any], dict[str, str]]] = [
    ({}, {}),
    ({"verify_ssl": False}, {}),
    ({"ssl_verify": False}, {}),
    ({"tls_verify": False}, {}),
    ({"verify": False}, {}),
    ({"insecure": True}, {}),
    ({"disable_ssl_verification": True}, {}),
    ({}, {"CURL_CA_BUNDLE": ""}),
    ({}, {"REQUESTS_CA_BUNDLE": ""}),
    ({}, {"PYTHONHTTPSVERIFY": "0"}),
    ({}, {"SSL_CERT_FILE": str(CERT)}),  # OpenSSL's variable: requests uses certifi
]


@pytest.mark.parametrize(("extra", "env"), WOULD_BE_OPT_OUTS)
def test_an_untrusted_certificate_is_refused_whatever_the_settings(
    tls_server: ThreadingHTTPServer, tmp_path: Path, extra: dict, env: dict
) -> None:
    result = _tls_run(tls_server, tmp_path, extra, env)
    assert result.returncode != 0
    assert tls_server.seen == [], "a request got through an untrusted TLS connection"  # type: ignore[attr-defined]
    errors = [line for line in result.stderr.splitlines() if "| ERROR" in line]
    assert len(errors) == 1
    assert "SSLError" in errors[0] or "Invalid configuration" in errors[0]
    assert_nothing_leaks(result, tmp_path)


def test_trust_changes_only_through_the_ca_bundle_variable(
    tls_server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    """The positive control: the same server is trusted once its CA is named in
    REQUESTS_CA_BUNDLE — so the refusals above are about trust, not a broken server."""
    result = _tls_run(tls_server, tmp_path, {}, {"REQUESTS_CA_BUNDLE": str(CERT)})
    assert result.returncode == 0, result.stderr[-2000:]
    (headers,) = tls_server.seen  # type: ignore[attr-defined]
    assert headers["Authorization"] == f"Omnisend-API-Key {KEY}"
    assert_nothing_leaks(result, tmp_path)


def test_no_setting_mentions_tls_verification() -> None:
    about = json.loads(
        subprocess.run(
            [str(TARGET_BIN), "--about", "--format=json"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    )
    names = " ".join(about["settings"]["properties"]).lower()
    for word in ("verify", "ssl", "tls", "insecure", "cert"):
        assert word not in names
