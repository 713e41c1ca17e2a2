"""PredictLinks answers written straight to protobuf wire bytes.

Building a ``PredictLinksResponse`` field by field costs about 0.7 µs per candidate (a message
object per candidate, its strings copied in, then serialised): at top-10 about a third of a
served query's Python work. The answer's shape is fixed and small, so :class:`LinkAnswers`
writes the wire format itself: each entity's ``entity_id`` and ``name`` fields are encoded
once, when a model is loaded, and an answer is joined from those pieces (about 0.3 µs per
candidate; a numpy assembly of whole bursts was tried and lost below ~64 queries per burst).
Parsed, the bytes equal the message :func:`kgweave.api.convert.links_to_pb` builds (the
tests check it); only the encoding of a zero score differs (written, where the library leaves
the default out), which every parser reads back as zero.

Wire format (https://protobuf.dev/programming-guides/encoding/)::

    PredictLinksResponse: results = 1 (QueryResult, repeated), model_version = 2 (string)
    QueryResult:          candidates = 1 (Candidate, repeated)
    Candidate:            rank = 1 (int32), entity_id = 2 (string), name = 3 (string),
                          score = 4 (float, fixed32), known = 5 (bool)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from kgweave.arguments import MAX_K
from kgweave.predict import TopK
from kgweave.serving.served import WARM_UPS, ServedModel

_LEN = 2  # wire type of strings and messages
_RESULTS = bytes([1 << 3 | _LEN])  # results / candidates: field 1, length-delimited
_VERSION = bytes([2 << 3 | _LEN])
_RANK = 1 << 3  # field 1, varint
_SCORE = bytes([4 << 3 | 5])  # field 4, fixed32
_KNOWN = bytes([5 << 3, 1])  # field 5, varint 1
_FLOAT = struct.Struct("<f")
_NEG_INF = float("-inf")


def varint(value: int) -> bytes:
    """A non-negative integer as a protobuf varint."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string_field(number: int, text: str) -> bytes:
    data = text.encode()
    return bytes([number << 3 | _LEN]) + varint(len(data)) + data


def _delimited(tag: bytes, body: bytes) -> bytes:
    return tag + varint(len(body)) + body


#: ``rank`` fields for ranks 1..MAX_K
_RANKS = [bytes([_RANK]) + varint(rank) for rank in range(1, MAX_K + 1)]
#: a candidate's head, its tag and length, by body length (the common lengths)
_HEADS = [_RESULTS + varint(n) for n in range(1 << 10)]


class LinkAnswers:
    """Serialised ``PredictLinksResponse`` messages for the ranked entity ids of a model.

    Args:
        labels: entity id labels by entity id (the ``entity_id`` field).
        names: entity names by entity id (the ``name`` field; None or "" for none).
    """

    def __init__(
        self,
        labels: Sequence[str],
        names: Sequence[str | None],
        base: LinkAnswers | None = None,
    ) -> None:
        """``base``: the answers of a version whose entities these extend (the same labels
        and names first): its fields are reused, only the new entities' encoded."""
        self.labels, self.names = labels, names
        start = 0
        if base is not None and len(base.labels) <= len(labels):
            n = len(base.labels)
            if list(labels[:n]) == list(base.labels) and list(names[:n]) == list(base.names):
                start = n
        #: per entity, its encoded ``entity_id`` and ``name`` fields
        self.fields: list[bytes] = [*(base.fields if start and base is not None else []), *(
            _string_field(2, label) + (_string_field(3, name) if name else b"")
            for label, name in zip(labels[start:], names[start:], strict=True)
        )]  # fmt: skip

    def encode(self, top: TopK, calls: Sequence[tuple[int, int, int]], version: str) -> list[bytes]:
        """One serialised response per call.

        Args:
            top: the ranked answers of all the calls' queries (filtered entries ``-inf``).
            calls: per call, its rows ``(start, stop)`` in ``top`` and its ``k``.
            version: the model version that answered (``model_version``).
        """
        trailer = _delimited(_VERSION, version.encode()) if version else b""
        return [
            b"".join([*(self._row(top, i, k) for i in range(start, stop)), trailer])
            for start, stop, k in calls
        ]

    def _row(self, top: TopK, i: int, k: int) -> bytes:
        """Row ``i``'s first ``k`` answers as a ``QueryResult`` field (filtered ones left out)."""
        fields, pack, heads = self.fields, _FLOAT.pack, _HEADS
        parts = []
        # (_RANKS is longer than any row)
        answers = zip(_RANKS, top.ids[i][:k], top.scores[i][:k], top.known[i][:k], strict=False)
        for rank, entity, score, known in answers:
            if score == _NEG_INF:
                continue
            body = b"".join((rank, fields[entity], _SCORE, pack(score), _KNOWN if known else b""))
            size = len(body)
            parts.append(heads[size] if size < len(heads) else _RESULTS + varint(size))
            parts.append(body)
        return _delimited(_RESULTS, b"".join(parts))


def link_answers(served: ServedModel, base: ServedModel | None = None) -> LinkAnswers:
    """The :class:`LinkAnswers` of a served version (built by its warm-up, from those of the
    version ``base`` it is derived from when it has them)."""
    answers = served.derived.get("link_answers")
    if answers is None:  # (a version loaded before this module was: built now, once)
        theirs = base.derived.get("link_answers") if base is not None else None
        art = served.artifact
        if (
            isinstance(theirs, LinkAnswers)
            and theirs.labels is art.entities.labels
            and theirs.names is art.entity_names
        ):
            answers = theirs  # the same entities, names and ids: the same answers
        else:
            answers = LinkAnswers(
                art.entities.labels,
                art.entity_names,
                theirs if isinstance(theirs, LinkAnswers) else None,
            )
        served.derived["link_answers"] = answers
    assert isinstance(answers, LinkAnswers)
    return answers


WARM_UPS.append(link_answers)
