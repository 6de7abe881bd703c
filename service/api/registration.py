"""Register servicers from the service descriptors, with a request
deserializer that turns an undecodable message (bad UTF-8, corrupt wire
format) into a clean INVALID_ARGUMENT instead of grpc's UNKNOWN, and a
response serializer that sends a response already encoded as it is."""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass


class Undecodable:
    """Stands for a request that could not be parsed."""

    def __init__(self, type_name: str):
        self.type_name = type_name


def _tolerant(message_class):
    def deserialize(data: bytes):
        try:
            return message_class.FromString(data)
        except DecodeError:
            return Undecodable(message_class.DESCRIPTOR.full_name)

    return deserialize


def _serializer(message_class):
    """A response's wire bytes; a response already encoded (bytes: one
    WatchEvents message sent to many watchers) goes as it is."""
    serialize = message_class.SerializeToString

    def encode(message) -> bytes:
        return message if isinstance(message, bytes) else serialize(message)

    return encode


def add_servicer(server: grpc.aio.Server, servicer, service_descriptor) -> None:
    handlers = {}
    for method in service_descriptor.methods:
        request_class = GetMessageClass(method.input_type)
        response_class = GetMessageClass(method.output_type)
        make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_tolerant(request_class),
            response_serializer=_serializer(response_class),
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_descriptor.full_name, handlers),))
