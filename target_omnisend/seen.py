"""Who was in this run, per segment tag: what mirror mode compares Omnisend against.

Held in memory as 64-bit hashes (8 bytes a member: a million members cost 8 MB, not
the ~100 MB of a set of strings), sorted once when mirror asks. A hash collision can
only make a leaver look present, which keeps the tag: the safe direction.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left


def _key(email: str) -> int:
    digest = hashlib.blake2b(email.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class SeenEmails:
    """An append-only set of emails; membership tests after the last add are cheap."""

    def __init__(self) -> None:
        self._keys = array("Q")
        self._sorted = True

    def add(self, email: str) -> None:
        self._keys.append(_key(email))
        self._sorted = False

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, email: object) -> bool:
        if not isinstance(email, str):
            return False
        if not self._sorted:
            self._keys = array("Q", sorted(set(self._keys)))
            self._sorted = True
        key = _key(email)
        index = bisect_left(self._keys, key)
        return index < len(self._keys) and self._keys[index] == key
