"""Server reflection under both names: ``grpc.reflection.v1`` (what current grpcurl, Postman
and grpcui ask for first) and ``grpc.reflection.v1alpha`` (older tools).

grpcio-reflection ships only v1alpha. The v1 protocol is the same file under another package
name (same messages, same field numbers), so the v1alpha servicer answers v1 calls too; the
v1 file is added to the descriptor pool so that tools can also describe the v1 service.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"


def _register_v1_file() -> None:
    """Add ``grpc/reflection/v1/reflection.proto`` (v1alpha's file, renamed) to the default
    descriptor pool, once."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = V1_FILE
    proto.package = "grpc.reflection.v1"
    proto.options.Clear()
    prefix = ".grpc.reflection.v1alpha."
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(prefix):
                field.type_name = ".grpc.reflection.v1." + field.type_name[len(prefix) :]
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(prefix, ".grpc.reflection.v1.")
            method.output_type = method.output_type.replace(prefix, ".grpc.reflection.v1.")
    pool.AddSerializedFile(proto.SerializeToString())


def add_reflection(target: Any, service_names: tuple[str, ...]) -> None:
    """Serve reflection (v1 and v1alpha) for ``service_names`` on ``target`` (a
    ``grpc.aio.Server`` or the native front end's handler table)."""
    _register_v1_file()
    servicer = reflection.aio.ReflectionServicer(
        (*service_names, V1_SERVICE, reflection.SERVICE_NAME)
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, target)
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    target.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, handlers),))
    target.add_registered_method_handlers(V1_SERVICE, handlers)
