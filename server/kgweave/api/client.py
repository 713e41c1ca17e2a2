"""A small synchronous client of the kgweave server (the CLI's remote commands use it).

Failed calls raise :mod:`kgweave.errors` types (mapped in :mod:`kgweave.api.status`), so the
CLI prints one line and exits with the usual code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf.json_format import MessageToDict

from kgweave.api.status import from_rpc_error
from kgweave.predict import Prediction
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc

T = TypeVar("T")

POLICY = {
    "": admin_pb2.ACTIVATION_POLICY_UNSPECIFIED,
    "if_better": admin_pb2.ACTIVATION_POLICY_IF_BETTER,
    "always": admin_pb2.ACTIVATION_POLICY_ALWAYS,
    "never": admin_pb2.ACTIVATION_POLICY_NEVER,
}


def to_dict(message: Any) -> dict[str, Any]:
    """A message as JSON-ready data, with field names as in the .proto and defaults shown."""
    return dict(
        MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )


class Client:
    """Typed calls to one server address (``host:port``)."""

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout
        self.channel = grpc.insecure_channel(address)
        self.knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        try:
            return method(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.address) from None

    # ---- knowledge
    def predict(
        self,
        relation: str,
        head: str | None = None,
        tail: str | None = None,
        k: int = 10,
        filter_known: bool = False,
    ) -> tuple[str, list[Prediction]]:
        request = knowledge_pb2.PredictLinksRequest(
            queries=[knowledge_pb2.LinkQuery(head=head or "", relation=relation, tail=tail or "")],
            k=k,
            filter_known=filter_known,
        )
        response = self._call(self.knowledge.PredictLinks, request)
        return response.model_version, [
            Prediction(c.rank, c.entity_id, c.name or None, c.score, c.known)
            for c in response.results[0].candidates
        ]

    def score(self, triples: list[tuple[str, str, str]]) -> tuple[str, list[float]]:
        request = knowledge_pb2.ScoreTriplesRequest(
            triples=[knowledge_pb2.Triple(head=h, relation=r, tail=t) for h, r, t in triples]
        )
        response = self._call(self.knowledge.ScoreTriples, request)
        return response.model_version, list(response.scores)

    def verbalize(
        self,
        entity: str = "",
        triples: list[tuple[str, str, str]] | None = None,
        max_chars: int = 600,
    ) -> dict[str, Any]:
        request = knowledge_pb2.VerbalizeRequest(
            entity=entity,
            triples=[knowledge_pb2.Triple(head=h, relation=r, tail=t) for h, r, t in triples or []],
            max_chars=max_chars,
        )
        return to_dict(self._call(self.knowledge.Verbalize, request))

    def complete(
        self,
        relation: str,
        head: str | None = None,
        tail: str | None = None,
        k: int = 10,
        kge_candidates: int = 50,
        generate: bool = True,
        write_to_graph: bool = False,
        min_score: float = 0.0,
    ) -> dict[str, Any]:
        request = knowledge_pb2.CompleteRequest(
            query=knowledge_pb2.LinkQuery(head=head or "", relation=relation, tail=tail or ""),
            k=k,
            kge_candidates=kge_candidates,
            generate=generate,
            write_to_graph=write_to_graph,
            min_score=min_score,
        )
        return to_dict(self._call(self.knowledge.Complete, request, timeout=300))

    # ---- admin
    def status(self) -> dict[str, Any]:
        return to_dict(self._call(self.admin.Status, admin_pb2.StatusRequest()))

    def models(self) -> dict[str, Any]:
        return to_dict(self._call(self.admin.ListModels, admin_pb2.ListModelsRequest()))

    def activate(self, version: str) -> dict[str, Any]:
        request = admin_pb2.ActivateModelRequest(version=version)
        return to_dict(self._call(self.admin.ActivateModel, request, timeout=600))

    def start_training(
        self, settings: dict[str, Any], dataset: str = "", policy: str = ""
    ) -> dict[str, Any]:
        request = admin_pb2.StartTrainingRequest(
            settings=admin_pb2.TrainingSettings(**settings),
            dataset=dataset,
            activation=POLICY[policy],
        )
        return to_dict(self._call(self.admin.StartTraining, request))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return to_dict(self._call(self.admin.CancelJob, admin_pb2.GetJobRequest(job_id=job_id)))

    def watch(self, job_id: str) -> Iterator[dict[str, Any]]:
        """Job updates until the job ends."""
        try:
            for job in self.admin.WatchJob(admin_pb2.GetJobRequest(job_id=job_id)):
                yield to_dict(job)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.address) from None
