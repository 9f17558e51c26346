"""Keep personal data and secrets out of logs: profiles are personal data and logs are
shipped to places (CI, log aggregators) that the profile data never should be."""

from __future__ import annotations

import contextlib
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence

#: The store URL as Meltano passes it (it may carry a password).
_STORE_URL_VARIABLE = "TARGET_OMNISEND_FINGERPRINT_STORE_PATH"
#: Anything shaped like an email address, wherever it sits in a text (the server may
#: echo one inside a sentence, a quoted value or a JSON fragment).
_EMAIL_IN_TEXT = re.compile(r"[^\s@\"'<>(),;:\[\]{}]{1,64}@[^\s@\"'<>(),;:\[\]{}]{1,255}")
#: A value the server quoted back ('…', "…" or “…”): it is the user's data, not advice.
_QUOTED = re.compile(r"'[^'\n]{1,500}'|\"[^\"\n]{1,500}\"|“[^”\n]{1,500}”")
#: Control characters would let a server-provided text forge log lines.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
#: Server text in a log line or a rejected file is cut to this many characters.
MAX_SERVER_TEXT = 300
#: A piece of a secret shorter than this is not searched for on its own (it would
#: blank out ordinary words), only as part of the whole secret.
_MIN_SECRET_PIECE = 8


def mask_email(email: str) -> str:
    """`jane.doe@example.com` -> `j***@example.com`: enough to find the record in the
    source, not enough to identify the person from a log line."""
    local, sep, domain = email.partition("@")
    if not sep:
        return "***"
    return f"{local[:1]}***@{domain}"


def secret_forms(secret: str) -> set[str]:
    """Every spelling in which a secret can reach an exception text: as is, trimmed, as
    `repr`/JSON/bytes escapes (http.client quotes a bad header as `b'…\\r\\n'`), and each
    long piece between whitespace or control characters (a key pasted with a line break
    is split by whatever quotes it)."""
    forms = {secret, secret.strip()}
    forms |= {repr(secret)[1:-1], ascii(secret)[1:-1], json.dumps(secret)[1:-1]}
    forms.add(secret.encode("unicode_escape").decode("ascii"))
    forms |= {piece for piece in re.split(r"[\s\x00-\x1f\x7f]+", secret)}
    return {form for form in forms if len(form) >= _MIN_SECRET_PIECE or form == secret.strip()}


def redact(text: str, *secrets: str | None) -> str:
    """Remove every secret, in every spelling `secret_forms` knows, from a text that is
    about to be logged or raised. Longest forms first, so a piece never leaves the rest
    of its secret behind."""
    forms: set[str] = set()
    for secret in secrets:
        if secret and secret.strip():
            forms |= secret_forms(secret)
    for form in sorted(forms, key=len, reverse=True):
        if form:
            text = text.replace(form, "***")
    return text


def one_line_error(message: str, secrets: Iterable[str | None]) -> str:
    """The final error line of a run: on one line (an exception text may span several,
    and a later line could pass for a log record of its own) and without any secret."""
    return _CONTROL.sub(" ", redact(message, *secrets)).strip()


def mask_server_text(text: str, limit: int = MAX_SERVER_TEXT) -> str:
    """Text written by the server (a problem's detail, a per-item reason, an error body)
    before it reaches a log line or the rejected file: emails masked, quoted values
    replaced (Omnisend may echo the value it refused, e.g. a name), control characters
    flattened and the length bounded."""
    text = _CONTROL.sub(" ", text)
    text = _EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group(0)), text)
    text = _QUOTED.sub("'***'", text)
    if len(text) > limit:
        text = text[:limit].rstrip() + "…"
    return text.strip()


def _store_secrets(config: Mapping[str, object]) -> list[str]:
    """The fingerprint store's password: its own setting, or one written into the URL."""
    found = [config.get("fingerprint_store_password")]
    url = config.get("fingerprint_store_path")
    if isinstance(url, str) and "://" in url:
        with contextlib.suppress(ValueError):
            parts = urllib.parse.urlsplit(url)
            raw = parts.password or ""
            found += [raw, urllib.parse.unquote(raw)]  # as written, and as the driver sees it
            # libpq's `?password=…` form: as written, and decoded
            for pair in parts.query.split("&"):
                name, _, value = pair.partition("=")
                if urllib.parse.unquote_plus(name) == "password":
                    found += [value, urllib.parse.unquote(value), urllib.parse.unquote_plus(value)]
    return [value for value in found if isinstance(value, str) and value]


def secrets_in_use(argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """Every API key and store password this process may hold, for redacting its final
    error line: variables named `*API_KEY` or `*PASSWORD`, the store URL's password, and
    the same in each `--config` file (an exception text may quote a secret from either,
    e.g. http.client quoting a header)."""
    found = [
        value for name, value in environ.items() if name.upper().endswith(("API_KEY", "PASSWORD"))
    ]
    found += _store_secrets({"fingerprint_store_path": environ.get(_STORE_URL_VARIABLE)})
    paths = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config"]
    paths += [arg.partition("=")[2] for arg in argv if arg.startswith("--config=")]
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                config = json.load(fh)
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(config, dict):
            found += _store_secrets(config)
        key = config.get("api_key") if isinstance(config, dict) else None
        if isinstance(key, str):
            found.append(key)
        elif key is not None:  # not a string: a schema error may quote it in either form
            found += [str(key), json.dumps(key)]
    return [secret for secret in found if secret]
