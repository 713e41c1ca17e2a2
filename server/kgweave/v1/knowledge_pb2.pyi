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
    __slots__ = ("id", "name", "description", "degree", "facts", "model_version", "similarity")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DEGREE_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    degree: int
    facts: _containers.RepeatedCompositeFieldContainer[Triple]
    model_version: str
    similarity: float
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., degree: _Optional[int] = ..., facts: _Optional[_Iterable[_Union[Triple, _Mapping]]] = ..., model_version: _Optional[str] = ..., similarity: _Optional[float] = ...) -> None: ...

class SearchEntitiesRequest(_message.Message):
    __slots__ = ("prefix", "limit", "text")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    limit: int
    text: str
    def __init__(self, prefix: _Optional[str] = ..., limit: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class SearchEntitiesResponse(_message.Message):
    __slots__ = ("entities",)
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    def __init__(self, entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ...) -> None: ...

class VerbalizeRequest(_message.Message):
    __slots__ = ("entity", "triples", "max_chars")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    TRIPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_CHARS_FIELD_NUMBER: _ClassVar[int]
    entity: str
    triples: _containers.RepeatedCompositeFieldContainer[Triple]
    max_chars: int
    def __init__(self, entity: _Optional[str] = ..., triples: _Optional[_Iterable[_Union[Triple, _Mapping]]] = ..., max_chars: _Optional[int] = ...) -> None: ...

class VerbalizeResponse(_message.Message):
    __slots__ = ("text", "sentences", "model_version")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    text: str
    sentences: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    def __init__(self, text: _Optional[str] = ..., sentences: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ("query", "k", "kge_candidates", "generate", "write_to_graph", "min_score")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    KGE_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    GENERATE_FIELD_NUMBER: _ClassVar[int]
    WRITE_TO_GRAPH_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    query: LinkQuery
    k: int
    kge_candidates: int
    generate: bool
    write_to_graph: bool
    min_score: float
    def __init__(self, query: _Optional[_Union[LinkQuery, _Mapping]] = ..., k: _Optional[int] = ..., kge_candidates: _Optional[int] = ..., generate: _Optional[bool] = ..., write_to_graph: _Optional[bool] = ..., min_score: _Optional[float] = ...) -> None: ...

class CompletionCandidate(_message.Message):
    __slots__ = ("rank", "entity_id", "name", "kge_score", "lm_logprob", "combined_score", "source", "evidence", "known", "graph_score", "lm_marginal", "new")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KGE_SCORE_FIELD_NUMBER: _ClassVar[int]
    LM_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    COMBINED_SCORE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    GRAPH_SCORE_FIELD_NUMBER: _ClassVar[int]
    LM_MARGINAL_FIELD_NUMBER: _ClassVar[int]
    NEW_FIELD_NUMBER: _ClassVar[int]
    rank: int
    entity_id: str
    name: str
    kge_score: float
    lm_logprob: float
    combined_score: float
    source: str
    evidence: str
    known: bool
    graph_score: float
    lm_marginal: float
    new: bool
    def __init__(self, rank: _Optional[int] = ..., entity_id: _Optional[str] = ..., name: _Optional[str] = ..., kge_score: _Optional[float] = ..., lm_logprob: _Optional[float] = ..., combined_score: _Optional[float] = ..., source: _Optional[str] = ..., evidence: _Optional[str] = ..., known: _Optional[bool] = ..., graph_score: _Optional[float] = ..., lm_marginal: _Optional[float] = ..., new: _Optional[bool] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ("candidates", "model_version", "w_kge", "w_lm", "bias", "written", "w_text", "lm_feature")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    W_KGE_FIELD_NUMBER: _ClassVar[int]
    W_LM_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    W_TEXT_FIELD_NUMBER: _ClassVar[int]
    LM_FEATURE_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[CompletionCandidate]
    model_version: str
    w_kge: float
    w_lm: float
    bias: float
    written: int
    w_text: float
    lm_feature: str
    def __init__(self, candidates: _Optional[_Iterable[_Union[CompletionCandidate, _Mapping]]] = ..., model_version: _Optional[str] = ..., w_kge: _Optional[float] = ..., w_lm: _Optional[float] = ..., bias: _Optional[float] = ..., written: _Optional[int] = ..., w_text: _Optional[float] = ..., lm_feature: _Optional[str] = ...) -> None: ...
