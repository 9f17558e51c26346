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
    a contact (60 MB for a first run of a million); this costs ~1.2 bytes. A false
    positive only makes an unchanged contact be sent once more: the safe direction.
    """

    _HASHES = 7
    _FIRST_BITS = 1 << 20  # ~90k emails at 1 % before the next, twice larger layer

    def __init__(self) -> None:
        self._layers: list[bytearray] = [bytearray(self._FIRST_BITS // 8)]
        self._count = 0
        self._capacity = self._FIRST_BITS // 10  # ~10 bits an email: ~1 % false positives

    @staticmethod
    def _positions(email: str, bits: int) -> list[int]:
        digest = hashlib.blake2b(email.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        first = int.from_bytes(digest[:8], "little")
        step = int.from_bytes(digest[8:], "little") | 1
        return [(first + i * step) % bits for i in range(WrittenThisRun._HASHES)]

    def add(self, email: str) -> None:
        if self._count >= self._capacity:
            self._layers.append(bytearray(len(self._layers[-1]) * 2))
            self._capacity += len(self._layers[-1]) * 8 // 10
        layer = self._layers[-1]
        for position in self._positions(email, len(layer) * 8):
            layer[position >> 3] |= 1 << (position & 7)
        self._count += 1

    def __contains__(self, email: object) -> bool:
        if not isinstance(email, str) or not self._count:
            return False
        for layer in self._layers:
            positions = self._positions(email, len(layer) * 8)
            if all(layer[p >> 3] & (1 << (p & 7)) for p in positions):
                return True
        return False
