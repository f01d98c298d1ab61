"""NeuAvatar's gRPC API (``neuavatar.v1``, proto/neuavatar/v1/neuavatar.proto): what the services
serve and what clients call.

- :func:`serve` / :func:`start_server` / :class:`ServerThread`: a server for some servicers, with
  health, reflection, token auth, TLS, error mapping and graceful shutdown; :class:`ApiSettings`.
- :class:`RendererService`: the Renderer service over :mod:`neuavatar.animate`.
- :class:`RendererClient`, :class:`AvatarsClient`: Python clients.
- ``pb``, ``pb_grpc``: the generated messages and stubs.

Names load on first use, as in :mod:`neuavatar`: a client does not import torch.
"""

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "ApiSettings": "neuavatar.api.settings",
    "NotFoundError": "neuavatar.api.errors",
    "serve": "neuavatar.api.server",
    "start_server": "neuavatar.api.server",
    "RunningServer": "neuavatar.api.server",
    "ServerThread": "neuavatar.api.server",
    "RendererService": "neuavatar.api.renderer",
    "AvatarSource": "neuavatar.api.renderer",
    "mapping_source": "neuavatar.api.renderer",
    "directory_source": "neuavatar.api.renderer",
    "RendererClient": "neuavatar.api.client",
    "AvatarsClient": "neuavatar.api.client",
    "connect": "neuavatar.api.client",
}
_MODULES = {"pb": "neuavatar.api._proto.neuavatar_pb2", "pb_grpc": "neuavatar.api._proto.neuavatar_pb2_grpc"}
__all__ = [
    "ApiSettings", "NotFoundError", "serve", "start_server", "RunningServer", "ServerThread",
    "RendererService", "AvatarSource", "mapping_source", "directory_source",
    "RendererClient", "AvatarsClient", "connect", "pb", "pb_grpc",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    raise AttributeError(f"module 'neuavatar.api' has no attribute {name!r}")


if TYPE_CHECKING:
    from neuavatar.api._proto import neuavatar_pb2 as pb
    from neuavatar.api._proto import neuavatar_pb2_grpc as pb_grpc
    from neuavatar.api.client import AvatarsClient, RendererClient, connect
    from neuavatar.api.errors import NotFoundError
    from neuavatar.api.renderer import AvatarSource, RendererService, directory_source, mapping_source
    from neuavatar.api.server import RunningServer, ServerThread, serve, start_server
    from neuavatar.api.settings import ApiSettings
