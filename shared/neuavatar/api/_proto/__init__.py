"""The Python code generated from proto/neuavatar/v1/neuavatar.proto (messages, stubs, servicers).

The modules beside this file are made at install time by setup.py's ``build_proto`` (grpcio-tools)
and are not in the repository; ``pip install -e .`` (or scripts/setup.sh) makes them again.
"""

try:
    from neuavatar.api._proto import neuavatar_pb2, neuavatar_pb2_grpc
except ImportError as e:  # a checkout that was never installed, or proto/ changed since
    raise ImportError("the gRPC code generated from proto/ is missing or stale: run `pip install -e .` "
                      "(or `python setup.py build_proto`) in the repository") from e

__all__ = ["neuavatar_pb2", "neuavatar_pb2_grpc"]
