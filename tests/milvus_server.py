"""A Milvus server on 127.0.0.1 for the tests.

It is Milvus Lite's gRPC service (the Milvus protocol, which pymilvus speaks to a standalone or
cluster server alike) on a TCP port, with two behaviours of a real server that Milvus Lite lacks:
- a token: with authentication on, Milvus reads `authorization` (base64 of the token) from each
  call's metadata and refuses a wrong or missing one with UNAUTHENTICATED;
- the limit of vector fields per collection (`proxy.maxVectorFieldNum`, 4 unless raised): creating
  a collection with more is refused with the server's own message;
- index types it refuses (`refused_index_types`), as a server whose query nodes have no local disk
  refuses DiskANN (`queryNode.enableDisk: false`). It records every index type asked for.
With a certificate it serves TLS (an `https://` address), as a server with `tls.serverPemPath`.
One worker thread answers the calls one at a time, so several client processes can write at once
(Milvus Lite's engine takes one writer per collection).
"""

from __future__ import annotations

import base64
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from milvus_lite.adapter.grpc.servicer import MilvusServicer
from milvus_lite.db import MilvusLite
from pymilvus.grpc_gen import common_pb2, milvus_pb2_grpc, schema_pb2

VECTOR_TYPES = {schema_pb2.FloatVector, schema_pb2.Float16Vector, schema_pb2.BFloat16Vector, schema_pb2.BinaryVector}
MESSAGE_LIMIT = 256 * 1024 * 1024  # bytes per message, as a Milvus standalone server


@dataclass
class MilvusServer:
    address: str  # milvus://127.0.0.1:PORT, or https://localhost:PORT with TLS
    token: str
    max_vector_fields: int
    index_types_asked: list[str]


class _LimitedServicer(MilvusServicer):
    def __init__(self, db: MilvusLite, max_vector_fields: int, refused_index_types: set[str], asked: list[str]):
        super().__init__(db)
        self.max_vector_fields = max_vector_fields
        self.refused_index_types, self.asked = refused_index_types, asked

    def CreateIndex(self, request, context):  # noqa: N802 - the gRPC method's name
        index_type = next((pair.value for pair in request.extra_params if pair.key == "index_type"), "")
        self.asked.append(index_type)
        if index_type in self.refused_index_types:
            return common_pb2.Status(code=1100, reason=f"invalid parameter: index type {index_type} needs disk "
                                                       "on the query nodes (queryNode.enableDisk)")  # fmt: skip
        return super().CreateIndex(request, context)

    def CreateCollection(self, request, context):  # noqa: N802 - the gRPC method's name
        schema = schema_pb2.CollectionSchema()
        schema.ParseFromString(request.schema)
        vectors = sum(field.data_type in VECTOR_TYPES for field in schema.fields)
        if vectors > self.max_vector_fields:
            return common_pb2.Status(code=65535, reason="maximum vector field's number should be limited to "
                                                        f"{self.max_vector_fields}")  # fmt: skip
        return super().CreateCollection(request, context)


class _TokenCheck(grpc.ServerInterceptor):
    def __init__(self, token: str):
        self.expected = base64.b64encode(token.encode()).decode()

    def intercept_service(self, continuation, handler_call_details):
        metadata = dict(handler_call_details.invocation_metadata)
        if metadata.get("authorization") == self.expected:
            return continuation(handler_call_details)

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "auth check failure, please check username and password are correct")  # fmt: skip

        return grpc.unary_unary_rpc_method_handler(refuse)


@contextmanager
def milvus_server(data_dir: Path, token: str = "root:Milvus", max_vector_fields: int = 10,
                  certificate: tuple[bytes, bytes] | None = None,
                  refused_index_types: frozenset[str] = frozenset()):  # fmt: skip
    """A server storing into `data_dir`, running until the block ends; `certificate` (PEM key, PEM
    certificate for localhost) serves TLS."""
    db = MilvusLite(str(data_dir))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=1),
        interceptors=[_TokenCheck(token)],
        options=[
            ("grpc.max_receive_message_length", MESSAGE_LIMIT),
            ("grpc.max_send_message_length", MESSAGE_LIMIT),
            # a Milvus server lets clients ping every 5 s, also between calls (pymilvus pings every 10 s);
            # gRPC's default policy would close their connections ("too many pings")
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
    )
    asked = []
    servicer = _LimitedServicer(db, max_vector_fields, set(refused_index_types), asked)
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(servicer, server)
    if certificate:
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([certificate]))
        address = f"https://localhost:{port}"
    else:
        port = server.add_insecure_port("127.0.0.1:0")
        address = f"milvus://127.0.0.1:{port}"
    server.start()
    try:
        yield MilvusServer(address, token, max_vector_fields, asked)
    finally:
        server.stop(grace=1)
        db.close()


def self_signed_certificate() -> tuple[bytes, bytes]:
    """`(PEM key, PEM certificate)` for localhost, signed by itself: a private server's certificate."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)
