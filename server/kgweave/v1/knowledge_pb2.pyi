from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LinkQuery(_message.Message):
    __slots__ = ("head", "relation", "tail")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    RELATION_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    head: str
    relation: str
    tail: str
    def __init__(self, head: _Optional[str] = ..., relation: _Optional[str] = ..., tail: _Optional[str] = ...) -> None: ...

class PredictLinksRequest(_message.Message):
    __slots__ = ("queries", "k", "filter_known")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_KNOWN_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[LinkQuery]
    k: int
    filter_known: bool
    def __init__(self, queries: _Optional[_Iterable[_Union[LinkQuery, _Mapping]]] = ..., k: _Optional[int] = ..., filter_known: _Optional[bool] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("rank", "entity_id", "name", "score", "known")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    rank: int
    entity_id: str
    name: str
    score: float
    known: bool
    def __init__(self, rank: _Optional[int] = ..., entity_id: _Optional[str] = ..., name: _Optional[str] = ..., score: _Optional[float] = ..., known: _Optional[bool] = ...) -> None: ...

class QueryResult(_message.Message):
    __slots__ = ("candidates",)
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ...) -> None: ...

class PredictLinksResponse(_message.Message):
    __slots__ = ("results", "model_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[QueryResult]
    model_version: str
    def __init__(self, results: _Optional[_Iterable[_Union[QueryResult, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class Triple(_message.Message):
    __slots__ = ("head", "relation", "tail")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    RELATION_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    head: str
    relation: str
    tail: str
    def __init__(self, head: _Optional[str] = ..., relation: _Optional[str] = ..., tail: _Optional[str] = ...) -> None: ...

class ScoreTriplesRequest(_message.Message):
    __slots__ = ("triples",)
    TRIPLES_FIELD_NUMBER: _ClassVar[int]
    triples: _containers.RepeatedCompositeFieldContainer[Triple]
    def __init__(self, triples: _Optional[_Iterable[_Union[Triple, _Mapping]]] = ...) -> None: ...

class ScoreTriplesResponse(_message.Message):
    __slots__ = ("scores", "model_version")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    model_version: str
    def __init__(self, scores: _Optional[_Iterable[float]] = ..., model_version: _Optional[str] = ...) -> None: ...

class GetEntityRequest(_message.Message):
    __slots__ = ("entity", "max_facts")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    MAX_FACTS_FIELD_NUMBER: _ClassVar[int]
    entity: str
    max_facts: int
    def __init__(self, entity: _Optional[str] = ..., max_facts: _Optional[int] = ...) -> None: ...

class Entity(_message.Message):
    __slots__ = ("id", "name", "description", "degree", "facts", "model_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DEGREE_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    degree: int
    facts: _containers.RepeatedCompositeFieldContainer[Triple]
    model_version: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., degree: _Optional[int] = ..., facts: _Optional[_Iterable[_Union[Triple, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class SearchEntitiesRequest(_message.Message):
    __slots__ = ("prefix", "limit")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    limit: int
    def __init__(self, prefix: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class SearchEntitiesResponse(_message.Message):
    __slots__ = ("entities",)
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    def __init__(self, entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ...) -> None: ...
