"""Write the bundled sample segment: realistic VIP-buyer profiles, deterministic.

Most profiles are clean; a known share carries the problems real CDP exports have
(missing, invalid, mixed-case and padded emails, duplicates by case, bad country
codes, odd date formats, unicode and right-to-left names), so the demo and the tests
show every outcome. Re-run to regenerate: `python samples/generate_segment.py`.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

FIRST = [
    "Anna",
    "Jonas",
    "Marie",
    "Lukas",
    "Sofia",
    "Mateo",
    "Emma",
    "Noah",
    "Olivia",
    "Liam",
    "Zoë",
    "Björn",
    "Ægir",
    "Chloé",
    "José",
    "Łukasz",
    "Søren",
    "İlker",
    "Nuñez",
    "François",
    "美咲",
    "Дмитрий",
    "محمد",
    "יעל",
    "Aarav",
    "Kwame",
    "Amara",
    "Hiroshi",
    "Ngozi",
    "Priya",
]
LAST = [
    "Smith",
    "Müller",
    "García",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Jensen",
    "Novák",
    "Silva",
    "O'Brien",
    "van der Berg",
    "Ørsted",
    "Çelik",
    "佐藤",
    "Иванов",
    "الخطيب",
    "כהן",
    "Okafor",
    "Nakamura",
    "Patel",
    "Mensah",
    "Lindqvist",
    "Fernández",
    "Łęcki",
    "Horváth",
    "Schmidt",
]
PLACES = [
    ("Vilnius", "", "LT", "Lithuania", "LT-01100"),
    ("Berlin", "Berlin", "DE", "Germany", "10115"),
    ("Austin", "TX", "US", "United States", "73301"),
    ("Lyon", "", "FR", "France", "69001"),
    ("Toronto", "ON", "CA", "Canada", "M5H 2N2"),
    ("Kraków", "", "PL", "Poland", "30-001"),
    ("São Paulo", "SP", "BR", "Brazil", "01000-000"),
    ("Tokyo", "", "JP", "Japan", "100-0001"),
    ("Tel Aviv", "", "IL", "Israel", "6100000"),
    ("Lagos", "", "NG", "Nigeria", "100001"),
    ("London", "", "GB", "United Kingdom", "SW1A 1AA"),
    ("Melbourne", "VIC", "AU", "Australia", "3000"),
]
PREFIXES = ["1", "44", "49", "370", "33"]
DOMAINS = ["example.com", "mail.example.org", "shop.example.net", "example.co.uk"]
STREETS = ["Main St", "Gedimino pr.", "Rue de la Paix", "Hauptstraße", "Avenida Paulista"]


def ascii_handle(first: str, last: str, n: int) -> str:
    base = (
        f"{first}.{last}".encode("ascii", "ignore")
        .decode()
        .lower()
        .replace(" ", "")
        .replace("'", "")
    )
    return f"{base.strip('.') or 'customer'}{n}"


def profile(rng: random.Random, n: int) -> dict:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    city, state, code, country, postal = rng.choice(PLACES)
    record = {
        "customer_id": f"C{100000 + n}",
        "email": f"{ascii_handle(first, last, n)}@{rng.choice(DOMAINS)}",
        "first_name": first,
        "last_name": last,
        "address": f"{rng.randint(1, 250)} {rng.choice(STREETS)}",
        "city": city,
        "state": state,
        "postal_code": postal,
        "country": country,
        "country_code": code,
        "phone": f"+{rng.choice(PREFIXES)}{rng.randint(200000000, 999999999)}",
        "birthdate": f"{rng.randint(1950, 2004)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "gender": rng.choice(["f", "m", "female", "male", ""]),
        "lifetime_value": round(rng.uniform(500, 25000), 2),
        "orders_count": rng.randint(3, 120),
        "loyalty_tier": rng.choice(["gold", "platinum", "diamond"]),
        "last_order_at": f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T10:00:00Z",
    }
    return record


def flaw(rng: random.Random, record: dict, n: int) -> dict:
    """Roughly one profile in six carries a problem a real export has."""
    kind = n % 23
    if kind == 1:
        record["email"] = record["email"].upper()  # mixed case: normalised, delivered
    elif kind == 2:
        record["email"] = f"  {record['email']}  "  # padded: trimmed, delivered
    elif kind == 3:
        record["email"] = None  # missing: rejected
    elif kind == 4:
        record["email"] = record["email"].replace("@", " at ")  # invalid: rejected
    elif kind == 5:
        record["country_code"] = "XX"  # not ISO: countryCode omitted
    elif kind == 6:
        record["birthdate"] = "31/12/1990"  # not a date we trust: dropped with a warning
    elif kind == 7:
        record["phone"] = "555-0100"  # no country prefix: phone dropped
    elif kind == 8:
        record["first_name"] = ""  # empty: omitted, never sent as ""
    elif kind == 9:
        record["email"] = (
            record["email"].replace(".", "..", 1)
            if "." in record["email"].split("@")[0]
            else "bad@@example.com"
        )
    return record


def main(path: str = "samples/vip_buyers.jsonl", count: int = 300, seed: int = 42) -> None:
    rng = random.Random(seed)
    records = [flaw(rng, profile(rng, n), n) for n in range(count)]
    # A duplicate by case: the later record of the same contact wins.
    dup = dict(records[10], email=records[10]["email"].title(), loyalty_tier="diamond")
    records.append(dup)
    with Path(path).open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(records)} profiles to {path}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
