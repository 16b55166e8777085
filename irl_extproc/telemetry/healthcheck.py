"""`python -m irl_extproc.telemetry.healthcheck [HOST:PORT]`: ask the standard gRPC health service.

Exit 0 when the server answers SERVING, 1 otherwise. The container image's HEALTHCHECK
uses it (Kubernetes probes use their built-in ``grpc`` probe instead). It imports only
grpc, so it starts in a fraction of a second.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:50051"


def check(target: str, *, service: str = "", timeout: float = 2.0) -> str:
    """The health status name, e.g. ``SERVING``; ``UNREACHABLE`` when the call fails."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            return f"UNREACHABLE ({exc.code().name})"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = args[0] if args else DEFAULT_TARGET
    status = check(target)
    print(f"{target}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
