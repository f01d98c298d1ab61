"""The images' HEALTHCHECK: exit 0 when this container's gRPC server reports SERVING, else 1.

Asks the standard gRPC health service on 127.0.0.1:$NEUAVATAR_API_PORT (health checks need no
token). Kubernetes does not run this: its probes call the same health service natively.
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

port = os.environ.get("NEUAVATAR_API_PORT", "50051")
with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    except grpc.RpcError as e:
        print(f"unhealthy: {e.code().name}", file=sys.stderr)
        sys.exit(1)
sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
