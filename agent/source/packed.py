"""Raw objects packed small while they wait in the event queue.

A parsed manifest or API object is a tree of dicts and lists: about 2.5 KB of Python objects for
a three-endpoint EndpointSlice, over 150 MB for the 60,000 objects of 10,000 split ports. Between
the source that reads it and the store that parses it, an object is held only as its pickle
(a few hundred bytes; unlike JSON it keeps the `Decimal` weights and `datetime` timestamps exact),
and the store keeps only a digest of it to tell an unchanged object. So a file or a list of
tens of thousands of objects is never held as dicts all at once.

The pickles are made here and read back here, in the same process: nothing foreign is unpickled.
"""
from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from dataclasses import dataclass

from kernsplit.agent.source.contract import ObjectKey, RawObject

DIGEST_SIZE = 16


@dataclass(frozen=True, slots=True)
class Packed:
    key: ObjectKey
    blob: bytes

    def unpack(self) -> RawObject:
        return pickle.loads(self.blob)   # noqa: S301 (our own pickle, made by `pack` in this process)

    def digest(self) -> bytes:
        """Equal for equal objects read the same way (a re-read file, an object listed again)."""
        return hashlib.blake2b(self.blob, digest_size=DIGEST_SIZE).digest()


def pack(obj: RawObject | Packed) -> Packed:
    if isinstance(obj, Packed):
        return obj
    return Packed(ObjectKey.of(obj), pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def key_of(obj: RawObject | Packed) -> ObjectKey:
    return obj.key if isinstance(obj, Packed) else ObjectKey.of(obj)


def packable(obj: object) -> bool:
    """Only objects (mappings) are kept; anything else is not a Kubernetes object."""
    return isinstance(obj, (Mapping, Packed))
