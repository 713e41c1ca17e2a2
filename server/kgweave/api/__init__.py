"""gRPC transport: servicers over :class:`kgweave.serving.service.KGService`, server, client.

The generated code of ``proto/kgweave/v1`` lives in :mod:`kgweave.v1`.
"""
