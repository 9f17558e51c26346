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


class WrittenThisRun:
    """Emails written to Omnisend in this run, as a growing Bloom filter.

    "Latest version wins" across streams: stream b's record may equal b's own stored
    fingerprint while stream a wrote another version of that contact earlier in the run
    (already confirmed, so no longer in flight). Omnisend then holds a's version, and
    b's must be sent after all. An exact set of every email a run writes costs ~60 bytes
    a contact (60 MB for a first run of a million); this costs 2 bytes, and ~1 µs an
    email (two bits from Python's own string hash, cached on the string and salted per
    process, which is all a filter living for one run needs). A false positive (~1.5 %)
    only makes an unchanged contact be sent once more: the safe direction.
    """

    _FIRST_BITS = 1 << 21  # 256 kB: 131k emails at 16 bits each, then a layer twice larger

    def __init__(self) -> None:
        self._layers: list[bytearray] = [bytearray(self._FIRST_BITS >> 3)]
        self._room = self._FIRST_BITS >> 4

    def add(self, email: str) -> None:
        if not self._room:
            self._layers.append(bytearray(len(self._layers[-1]) * 2))
            self._room = len(self._layers[-1]) >> 1
        self._room -= 1
        layer = self._layers[-1]
        mask = (len(layer) << 3) - 1
        h = hash(email)
        first, second = h & mask, (h >> 32) & mask
        layer[first >> 3] |= 1 << (first & 7)
        layer[second >> 3] |= 1 << (second & 7)

    def __contains__(self, email: object) -> bool:
        if not isinstance(email, str):
            return False
        h = hash(email)
        for layer in self._layers:
            mask = (len(layer) << 3) - 1
            first, second = h & mask, (h >> 32) & mask
            if layer[first >> 3] & (1 << (first & 7)) and layer[second >> 3] & (1 << (second & 7)):
                return True
        return False
