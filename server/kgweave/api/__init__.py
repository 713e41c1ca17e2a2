"""gRPC transport: servicers over :class:`kgweave.dataplane.DataPlane`, server, client.

The generated code of ``proto/kgweave/v1`` lives in :mod:`kgweave.v1`.
"""
