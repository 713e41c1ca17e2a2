"""Clients of kgweave's API: :class:`Client` over gRPC, :class:`LocalClient` in-process.

Both build the same request messages and return the same answers, as JSON-ready data with
the .proto's field names (:func:`kgweave.api.convert.to_dict`): the CLI prints one shape
whether a server answered or a model folder was opened here. :class:`LocalClient` calls the
very servicers a server runs, over a :class:`~kgweave.dataplane.DataPlane` serving one
folder, so validation, defaults and errors are the server's. Failed calls raise
:mod:`kgweave.errors` types (mapped in :mod:`kgweave.api.status`).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from kgweave.api.convert import POLICY_TO_PB, query_to_pb, to_dict, triples_to_pb
from kgweave.api.inprocess import InProcessContext
from kgweave.api.status import from_rpc_error, from_status
from kgweave.predict import Query
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc

#: bytes per RegisterModel message: well inside gRPC's default 4 MiB message limit
CHUNK_BYTES = 1 << 20


def _policy(policy: str) -> Any:
    return POLICY_TO_PB[policy] if policy else admin_pb2.ACTIVATION_POLICY_UNSPECIFIED


def model_chunks(folder: Path, policy: str = "") -> Iterator[admin_pb2.ModelChunk]:
    """The files of a model folder as RegisterModel messages (policy in the first)."""
    activation = _policy(policy)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.parent.name != "checkpoint")
    for path in files:
        name = path.relative_to(folder).as_posix()
        with path.open("rb") as handle:
            data = handle.read(CHUNK_BYTES)
            while True:
                yield admin_pb2.ModelChunk(path=name, data=data, activation=activation)
                activation = admin_pb2.ACTIVATION_POLICY_UNSPECIFIED
                data = handle.read(CHUNK_BYTES)
                if not data:
                    break


class BaseClient(abc.ABC):
    """kgweave's calls; a subclass says how a request reaches the servicers."""

    timeout: float = 30.0
    #: where the answers come from (a server address or a model folder), for messages
    address: str = ""

    @abc.abstractmethod
    def _unary(self, method: str, request: Any, timeout: float | None = None) -> Any:
        """Call ``method`` (e.g. ``"PredictLinks"``) with ``request``; its response."""

    @abc.abstractmethod
    def watch(self, job_id: str) -> Iterator[dict[str, Any]]:
        """A job's updates until it ends."""

    @abc.abstractmethod
    def register(self, folder: Path, policy: str = "") -> dict[str, Any]:
        """Register a local model folder as a new version on the server."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the client holds."""

    def __enter__(self) -> BaseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- knowledge
    def predict(self, query: Query, k: int = 0, filter_known: bool = False) -> dict[str, Any]:
        request = knowledge_pb2.PredictLinksRequest(
            queries=[query_to_pb(query)], k=k, filter_known=filter_known
        )
        return to_dict(self._unary("PredictLinks", request))

    def score(self, triples: list[tuple[str, str, str]]) -> dict[str, Any]:
        request = knowledge_pb2.ScoreTriplesRequest(triples=triples_to_pb(triples))
        return to_dict(self._unary("ScoreTriples", request))

    def verbalize(
        self,
        entity: str = "",
        triples: list[tuple[str, str, str]] | None = None,
        max_chars: int = 0,
    ) -> dict[str, Any]:
        request = knowledge_pb2.VerbalizeRequest(
            entity=entity, triples=triples_to_pb(triples or []), max_chars=max_chars
        )
        return to_dict(self._unary("Verbalize", request))

    def complete(
        self,
        query: Query,
        k: int = 0,
        kge_candidates: int = 0,
        generate: bool = True,
        write_to_graph: bool = False,
        min_score: float = 0.0,
    ) -> dict[str, Any]:
        request = knowledge_pb2.CompleteRequest(
            query=query_to_pb(query),
            k=k,
            kge_candidates=kge_candidates,
            generate=generate,
            write_to_graph=write_to_graph,
            min_score=min_score,
        )
        return to_dict(self._unary("Complete", request, timeout=300))

    # ---- admin
    def status(self) -> dict[str, Any]:
        return to_dict(self._unary("Status", admin_pb2.StatusRequest()))

    def models(self) -> dict[str, Any]:
        return to_dict(self._unary("ListModels", admin_pb2.ListModelsRequest()))

    def write_facts(self, request: admin_pb2.WriteFactsRequest) -> dict[str, Any]:
        """WriteFacts: graph, then change log, then served (see the proto)."""
        timeout = max(request.wait_s, 10.0) + 30.0
        return to_dict(self._unary("WriteFacts", request, timeout=timeout))

    def activate(self, version: str) -> dict[str, Any]:
        request = admin_pb2.ActivateModelRequest(version=version)
        return to_dict(self._unary("ActivateModel", request, timeout=600))

    def start_training(
        self,
        settings: dict[str, Any],
        dataset: str = "",
        policy: str = "",
        tuning: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A training job; with ``tuning`` (TuningSettings fields), a search."""
        request = admin_pb2.StartTrainingRequest(
            settings=admin_pb2.TrainingSettings(**settings),
            dataset=dataset,
            activation=_policy(policy),
            tuning=admin_pb2.TuningSettings(**tuning) if tuning else None,
        )
        return to_dict(self._unary("StartTraining", request))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return to_dict(self._unary("CancelJob", admin_pb2.GetJobRequest(job_id=job_id)))


class Client(BaseClient):
    """Calls to a kgweave server at ``address`` (``host:port``) over gRPC: over TLS with
    ``credentials`` (:func:`kgweave.api.auth.channel_credentials`), sending ``token`` as
    ``authorization: Bearer <token>`` when given. :meth:`from_settings` takes all three from
    ``KGWEAVE_SERVER``, ``KGWEAVE_TLS``/``KGWEAVE_TLS_CA``/``KGWEAVE_TLS_CLIENT_*`` and
    ``KGWEAVE_TOKEN``."""

    def __init__(
        self,
        address: str,
        timeout: float = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        if credentials is not None:
            self.channel = grpc.secure_channel(address, credentials)
        else:
            self.channel = grpc.insecure_channel(address)
        self._stubs = (
            knowledge_pb2_grpc.KnowledgeServiceStub(self.channel),
            admin_pb2_grpc.AdminServiceStub(self.channel),
        )

    @classmethod
    def from_settings(cls, settings: Any, timeout: float = 30.0) -> Client:
        """A client of the server the settings name, with their TLS and token."""
        from kgweave.api.auth import channel_credentials

        token = settings.token.get_secret_value() if settings.token is not None else None
        return cls(settings.server, timeout, channel_credentials(settings), token)

    def close(self) -> None:
        self.channel.close()

    def _method(self, name: str) -> Any:
        return next(getattr(s, name) for s in self._stubs if hasattr(s, name))

    def _unary(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return self._method(method)(
                request, timeout=timeout or self.timeout, metadata=self.metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.address) from None

    def watch(self, job_id: str) -> Iterator[dict[str, Any]]:
        try:
            request = admin_pb2.GetJobRequest(job_id=job_id)
            for job in self._method("WatchJob")(request, metadata=self.metadata):
                yield to_dict(job)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.address) from None

    def register(self, folder: Path, policy: str = "") -> dict[str, Any]:
        try:
            response = self._method("RegisterModel")(
                model_chunks(folder, policy), timeout=600, metadata=self.metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.address) from None
        return to_dict(response)


class LocalClient(BaseClient):
    """The same calls answered here, by the servicers over a data plane serving the model
    folder ``folder`` (``kgweave predict DIR`` and the other local commands)."""

    def __init__(self, folder: Path, settings: Any) -> None:
        from kgweave.api.servicers import AdminServicer, KnowledgeServicer
        from kgweave.dataplane import DataPlane

        self.address = str(folder)
        self.plane = DataPlane.for_folder(folder, settings)
        self._servicers = (KnowledgeServicer(self.plane), AdminServicer(self.plane))

    def close(self) -> None:
        self.plane.close()

    def _unary(self, method: str, request: Any, timeout: float | None = None) -> Any:
        handler = next(getattr(s, method) for s in self._servicers if hasattr(s, method))
        return asyncio.run(handler(request, InProcessContext(timeout)))

    def watch(self, job_id: str) -> Iterator[dict[str, Any]]:
        raise from_status(grpc.StatusCode.FAILED_PRECONDITION, "a model folder runs no jobs")

    def register(self, folder: Path, policy: str = "") -> dict[str, Any]:
        raise from_status(grpc.StatusCode.FAILED_PRECONDITION, "register with a running server")
