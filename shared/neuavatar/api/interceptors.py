"""Server interceptors every NeuAvatar service installs: token authentication and error mapping.

Both wrap the method handler once, for every RPC of every servicer, so that a servicer stays thin
(parse, call the library, reply) and cannot forget either. They work on grpc.aio servers and on all
four call shapes (unary or streamed, either way).
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from neuavatar.api.errors import status_for

__all__ = ["TokenAuthInterceptor", "ErrorInterceptor", "AUTH_METADATA", "HEALTH_PREFIX"]

AUTH_METADATA = "authorization"
HEALTH_PREFIX = "/grpc.health.v1.Health/"

_Behavior = Callable[..., Any]


def _with_behavior(handler: grpc.RpcMethodHandler, wrap: Callable[[_Behavior, bool], _Behavior]) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour replaced by ``wrap(behaviour, response_streaming)``."""
    kind = (handler.request_streaming, handler.response_streaming)
    factory, behavior = {
        (False, False): (grpc.unary_unary_rpc_method_handler, handler.unary_unary),
        (False, True): (grpc.unary_stream_rpc_method_handler, handler.unary_stream),
        (True, False): (grpc.stream_unary_rpc_method_handler, handler.stream_unary),
        (True, True): (grpc.stream_stream_rpc_method_handler, handler.stream_stream),
    }[kind]
    return factory(wrap(behavior, handler.response_streaming), request_deserializer=handler.request_deserializer,
                   response_serializer=handler.response_serializer)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuse calls that do not carry ``authorization: Bearer <token>`` (UNAUTHENTICATED).

    The token is compared in constant time. Health checks are exempt (``exempt`` method prefixes):
    load balancers and kubelets probe without credentials.
    """

    def __init__(self, token: str, exempt: Sequence[str] = (HEALTH_PREFIX,)):
        if not token:
            raise ValueError("TokenAuthInterceptor needs a non-empty token")
        self._token = token.encode()
        self._exempt = tuple(exempt)

    def _refusal(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        """Why the call's ``metadata`` is refused, or None when it carries the token."""
        sent = [v for k, v in metadata or () if k == AUTH_METADATA]
        if not sent:
            return f"this server needs a token: send the metadata '{AUTH_METADATA}: Bearer <token>'"
        value = sent[0] if isinstance(sent[0], str) else sent[0].decode("latin-1")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return f"the '{AUTH_METADATA}' metadata must read 'Bearer <token>'"
        if not hmac.compare_digest(token.strip().encode(), self._token):
            return "the token sent is not valid for this server"
        return None

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self._exempt):
            return handler
        reason = self._refusal(handler_call_details.invocation_metadata)
        if reason is None:
            return handler

        def refuse(behavior: _Behavior, streaming: bool) -> _Behavior:
            async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

            async def deny_stream(request: Any, context: grpc.aio.ServicerContext):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
                yield  # never reached: makes this an async generator, the shape a streaming reply takes

            return deny_stream if streaming else deny

        return _with_behavior(handler, refuse)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """End a call that raised with the status :func:`~neuavatar.api.errors.status_for` gives: the
    library's errors as INVALID_ARGUMENT, unknown ids as NOT_FOUND, anything else INTERNAL
    (logged here with its traceback, never sent). Aborts and cancellations pass through."""

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method

        def guard(behavior: _Behavior, streaming: bool) -> _Behavior:
            if streaming and inspect.isasyncgenfunction(behavior):
                async def stream(request: Any, context: grpc.aio.ServicerContext):
                    try:
                        async for response in behavior(request, context):
                            yield response
                    except grpc.aio.AbortError:
                        raise
                    except Exception as e:  # mapped to a status; logged when unexpected
                        await context.abort(*status_for(e, method))
                return stream
            if not inspect.iscoroutinefunction(behavior):
                return behavior  # a synchronous handler: grpc's own handling applies

            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await behavior(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as e:  # as above
                    await context.abort(*status_for(e, method))
            return call

        return _with_behavior(handler, guard)
