"""Generated from proto/kgweave/v1 by grpc_tools.protoc: do not edit (see docs/api.md)."""
