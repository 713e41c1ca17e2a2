"""Protobuf messages to and from the data plane's types: the one place where they meet.

``*_from_pb`` read a request into plain arguments (protobuf's 0 or "" for "not given" become
None, so the defaults live in :mod:`kgweave.arguments` alone); ``*_to_pb`` build answers.
:func:`to_dict` is the JSON form every face prints (field names as in the .proto).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from kgweave.predict import Prediction, Query, TopK
from kgweave.serving.activation import POLICIES
from kgweave.serving.jobs import Job, JobState
from kgweave.serving.queries import Completion, LinkRequest
from kgweave.serving.served import EntityInfo, ServedModel
from kgweave.training.config import JOB_FIELDS
from kgweave.v1 import admin_pb2, knowledge_pb2

#: the proto's activation-policy enum by policy name (kgweave.serving.activation.POLICIES)
POLICY_TO_PB: dict[str, Any] = {
    name: admin_pb2.ActivationPolicy.Value(f"ACTIVATION_POLICY_{name.upper()}") for name in POLICIES
}
_POLICY_FROM_PB = {value: name for name, value in POLICY_TO_PB.items()}
_JOB_STATE: dict[JobState, Any] = {
    state: admin_pb2.JobState.Value(f"JOB_STATE_{state.name}") for state in JobState
}
#: the training settings a StartTraining request may carry
TRAINING_FIELDS = (*JOB_FIELDS, "joint")


def to_dict(message: Any) -> dict[str, Any]:
    """A message as JSON-ready data, with field names as in the .proto and defaults shown."""
    return dict(
        MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )


# ---- knowledge
def query_from_pb(query: Any) -> Query:
    return Query(relation=query.relation, head=query.head or None, tail=query.tail or None)


def query_to_pb(query: Query) -> knowledge_pb2.LinkQuery:
    return knowledge_pb2.LinkQuery(
        head=query.head or "", relation=query.relation, tail=query.tail or ""
    )


def link_request_from_pb(request: Any, deadline: float | None) -> LinkRequest:
    """A PredictLinksRequest; ``deadline`` a ``time.monotonic()`` value or None."""
    return LinkRequest(
        [query_from_pb(q) for q in request.queries],
        request.k or None,
        request.filter_known,
        deadline,
    )


def links_to_pb(served: ServedModel, top: TopK, version: str) -> knowledge_pb2.PredictLinksResponse:
    """A PredictLinks answer from ranked entity ids."""
    response = knowledge_pb2.PredictLinksResponse(model_version=version)
    for row in top.labelled(served.artifact.entities.labels, served.artifact.entity_names):
        add = response.results.add().candidates.add
        for rank, entity, name, score, known in row:
            add(rank=rank, entity_id=entity, name=name or "", score=score, known=known)
    return response


def predictions_from_pb(response: Any) -> list[list[Prediction]]:
    """The ranked answers of a PredictLinksResponse, per query."""
    return [
        [Prediction(c.rank, c.entity_id, c.name or None, c.score, c.known) for c in r.candidates]
        for r in response.results
    ]


def triples_from_pb(triples: Any) -> list[tuple[str, str, str]]:
    return [(t.head, t.relation, t.tail) for t in triples]


def triples_to_pb(triples: list[tuple[str, str, str]]) -> list[knowledge_pb2.Triple]:
    return [knowledge_pb2.Triple(head=h, relation=r, tail=t) for h, r, t in triples]


def entity_to_pb(
    info: EntityInfo, version: str, similarity: float | None = None
) -> knowledge_pb2.Entity:
    entity = knowledge_pb2.Entity(
        id=info.id,
        name=info.name,
        description=info.description,
        degree=info.degree,
        facts=triples_to_pb(info.facts),
        model_version=version,
    )
    if similarity is not None:
        entity.similarity = similarity
    return entity


def complete_from_pb(request: Any) -> dict[str, Any]:
    """A CompleteRequest as the keyword arguments of :meth:`QueryPlane.complete`."""
    return {
        "query": query_from_pb(request.query),
        "k": request.k or None,
        "kge_candidates": request.kge_candidates or None,
        "generate": request.generate,
        "write_to_graph": request.write_to_graph,
        "min_score": request.min_score,
    }


def completion_to_pb(result: Completion) -> knowledge_pb2.CompleteResponse:
    w = result.weights
    return knowledge_pb2.CompleteResponse(
        candidates=[
            knowledge_pb2.CompletionCandidate(
                rank=c.rank,
                entity_id=c.entity,
                name=c.name,
                kge_score=c.kge_score,
                lm_logprob=c.lm_logprob,
                combined_score=c.combined,
                source=c.source,
                evidence=c.evidence,
                known=c.known,
                graph_score=c.graph_score,
                lm_marginal=c.lm_marginal,
                new=c.new,
            )
            for c in result.candidates
        ],
        model_version=result.model_version,
        w_kge=w.w_kge,
        w_lm=w.w_lm,
        bias=w.bias,
        written=result.written,
        w_text=w.w_text,
        lm_feature=w.lm_feature,
    )


# ---- admin
def policy_from_pb(value: int) -> str | None:
    """A policy name, or None for UNSPECIFIED (the server's setting)."""
    return _POLICY_FROM_PB.get(value)


def training_from_pb(settings: Any) -> dict[str, Any]:
    """The training settings a StartTrainingRequest sets."""
    return {f: getattr(settings, f) for f in TRAINING_FIELDS if settings.HasField(f)}


def job_from_pb(request: Any) -> dict[str, Any]:
    """A StartTrainingRequest's job: its training settings, and ``tuning`` (the
    TuningSettings fields) when it asks for a search."""
    config = training_from_pb(request.settings)
    if request.HasField("tuning"):
        tuning = request.tuning  # its values as sent (NaN stays a float, for the check)
        config["tuning"] = {f.name: getattr(tuning, f.name) for f in tuning.DESCRIPTOR.fields}
    return config


def job_to_pb(job: Job) -> admin_pb2.Job:
    return admin_pb2.Job(
        job_id=job.job_id,
        state=_JOB_STATE[job.state],
        phase=job.phase,
        epoch=job.epoch,
        epochs=job.epochs,
        loss=job.loss,
        valid_mrr=job.valid_mrr,
        eta_s=job.eta_s,
        model_version=job.model_version,
        activated=job.activated,
        message=job.message,
        created_at=job.created_at,
        updated_at=job.updated_at,
        rate=job.rate,
        rate_unit=job.rate_unit,
    )


def model_to_pb(summary: dict[str, Any]) -> admin_pb2.ModelInfo:
    return admin_pb2.ModelInfo(**summary)


def status_to_pb(status: dict[str, Any]) -> admin_pb2.StatusResponse:
    status = dict(status)
    active = status.pop("active_model")
    changes = status.pop("changes", None)
    response = admin_pb2.StatusResponse(**status)
    if changes is not None:
        response.changes.CopyFrom(admin_pb2.ChangesStatus(**changes))
    if active is not None:
        response.active_model.CopyFrom(model_to_pb(active))
    return response


def write_from_pb(request: Any) -> dict[str, Any]:
    """A WriteFacts request as :meth:`DataPlane.write_facts` keywords."""
    return {
        "added": triples_from_pb(request.added),
        "removed": triples_from_pb(request.removed),
        "entities": [
            (
                e.id,
                e.name if e.HasField("name") else None,
                e.description if e.HasField("description") else None,
            )
            for e in request.entities
        ],
        "deleted": list(request.deleted_entities),
        "wait_s": request.wait_s,
    }
