"""The gRPC listener's own call loop on gRPC core (``server.grpc_server: core``).

grpcio's sync server spends about 120 µs of Python per unary call around the handler:
its completion-queue thread dispatches each event, hands the call to a pool thread,
which waits on a condition for the request message, and sends the status in another
round trip through the same thread. An allow-everything handler on it costs that
much; extauthz's whole cached Check costs about 15 µs in-process. This loop drives
the same gRPC core through grpcio's Cython layer (``grpc._cython.cygrpc``, the layer
both of grpcio's own servers are built on) with one thread and one batch per step:

- ``Authorization/Check``: receive the message; decide a cached token at once on the
  loop thread and send message, status and close in one batch. A token that must be
  verified (which may wait on a JWKS refetch) goes to the Check pool, whose thread
  sends the answer; the loop never waits.
- every other method (``grpc.health.v1``, reflection, anything unknown): grpcio's
  own method handlers, added through the usual ``add_generic_rpc_handlers`` /
  ``add_registered_method_handlers``, run on a small pool of their own with a
  :class:`grpc.ServicerContext`, never on a Check thread. A handler marked
  ``experimental_non_blocking`` (health ``Watch``) sends through a callback and holds
  no thread at all; health ``Check`` runs on the loop.

Channel arguments (message size, keepalive, ``SO_REUSEPORT``) and credentials (TLS,
mTLS, reloading certificates) are core's, exactly as with grpcio's server; so is a
graceful stop: no new calls, in-flight calls finish within the grace, then the rest
are cancelled. :func:`available` says whether the installed grpcio has what this
loop uses; if not, the app falls back to grpcio's sync server.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import grpc
import structlog

from extauthz.server.callpool import CallPool

log = structlog.get_logger("extauthz.server")

try:  # grpcio's Cython layer: present in every grpcio wheel, but not a public API
    from grpc._cython import cygrpc
except ImportError:  # pragma: no cover - a grpcio without it is not one we can test
    cygrpc = None

#: what the loop uses from the Cython layer; all present in grpcio 1.85
_NEEDED = (
    "Server", "CompletionQueue", "ReceiveMessageOperation", "SendInitialMetadataOperation",
    "SendMessageOperation", "SendStatusFromServerOperation",
    "ReceiveCloseOnServerOperation", "StatusCode", "peer_identities", "peer_identity_key",
    "auth_context",
)  # fmt: skip

#: gRPC status codes as core numbers
_CODES = {code: code.value[0] for code in grpc.StatusCode}


def available() -> bool:
    """True when the installed grpcio offers everything this loop uses."""
    return cygrpc is not None and all(hasattr(cygrpc, name) for name in _NEEDED)


class FastMethod(NamedTuple):
    """The one method the loop answers itself (``/pkg.Service/Method``).

    ``decode(bytes)`` reads a request (raises on bad bytes); ``cached(request)``
    answers it without waiting, or returns None; ``full(request)`` answers it
    whatever it takes (on a pool thread). Answers are serialized response bytes.
    """

    name: str
    decode: Callable[[bytes], Any]
    cached: Callable[[Any], bytes | None]
    full: Callable[[Any], bytes]


class _Tag:
    """What an event completes; the loop calls ``done(event)``."""

    __slots__ = ()

    def done(self, event: Any) -> None:  # pragma: no cover - overridden
        raise TypeError(type(self).__name__)


class _NewCall(_Tag):
    __slots__ = ()


class _Shutdown(_Tag):
    __slots__ = ()


_NEW = _NewCall()
_SHUTDOWN = _Shutdown()


class CoreServer:
    """A gRPC server: one call loop on gRPC core, a Check pool, a pool for the rest.

    The subset of :class:`grpc.Server` extauthz uses: add handlers and ports, start,
    stop with grace.
    """

    def __init__(
        self, fast: FastMethod, pool: Any, *, options: Sequence[tuple[str, Any]] = (),
        other_threads: int = 4, inline: Iterable[str] = (),
    ) -> None:  # fmt: skip
        if not available():
            raise RuntimeError("this grpcio lacks the core layer the call loop uses")
        self._fast = fast
        self._fast_method = fast.name.encode()
        self._pool = pool
        #: unary methods whose (quick, non-blocking) handlers run on the loop itself
        self._inline = {name.encode() for name in inline}
        self._others = CallPool(other_threads, thread_name_prefix="grpc")
        self._cq = cygrpc.CompletionQueue()
        self._server = cygrpc.Server(tuple(options), False)
        self._server.register_completion_queue(self._cq)
        self._generic: list[grpc.GenericRpcHandler] = []
        self._registered: dict[str, grpc.RpcMethodHandler] = {}
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._stopped = threading.Event()
        #: calls accepted and not yet closed (loop thread only)
        self._calls = 0
        #: the outstanding request for a new call (loop thread only after start)
        self._requesting = False
        self._shutdown_done = False
        #: the loop ended on an error, not on a stop
        self._failed = False
        self._thread: threading.Thread | None = None
        #: monotonic time the loop began handling its current event, 0.0 when waiting
        self.busy_since = 0.0

    # -- grpc.Server's registration API (what *_pb2_grpc helpers call) ----------------

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        """Serve what these handlers find (after the registered methods)."""
        self._generic.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        """Serve ``/service/method`` with each handler."""
        self._registered.update({f"/{service}/{name}": h for name, h in handlers.items()})

    def add_insecure_port(self, address: str) -> int:
        """Listen on ``address`` in plaintext; the bound port (raises when it fails)."""
        return _bound(address, self._server.add_http2_port(address.encode()))

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        """Listen on ``address`` with TLS; the bound port (raises when it fails)."""
        core = credentials._credentials
        return _bound(address, self._server.add_http2_port(address.encode(), core))

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start accepting calls (the loop runs in a thread of its own)."""
        with self._lock:
            if self._started:
                raise ValueError("already started")
            self._started = True
            self._server.start()
            self._request()
            self._thread = threading.Thread(target=self._serve, name="grpc-loop", daemon=True)
            self._thread.start()

    def stop(self, grace: float | None) -> threading.Event:
        """Stop accepting calls; calls in flight get ``grace`` seconds, then are
        cancelled. The event is set once the loop has ended."""
        with self._lock:
            if not self._started:
                self._stopped.set()
                return self._stopped
            if not self._stopping:
                self._stopping = True
                self._server.shutdown(self._cq, _SHUTDOWN)
            if not grace:
                self._server.cancel_all_calls()
            else:

                def cancel_late() -> None:
                    if not self._stopped.wait(grace):
                        with self._lock:
                            self._server.cancel_all_calls()

                threading.Thread(target=cancel_late, name="grpc-grace", daemon=True).start()
        return self._stopped

    def alive(self, stuck_after: float) -> bool:
        """The loop thread runs and has not been busy with one event for ``stuck_after``
        seconds (a liveness self-check)."""
        if self._thread is None or not self._thread.is_alive():
            return self._stopped.is_set() and self._thread is not None and not self._failed
        busy = self.busy_since
        return busy == 0.0 or time.monotonic() - busy < stuck_after

    # -- the loop ----------------------------------------------------------------------

    def _request(self) -> None:
        self._server.request_call(self._cq, self._cq, _NEW)
        self._requesting = True

    def _serve(self) -> None:
        poll, clock = self._cq.poll, time.monotonic
        try:
            while True:
                event = poll()
                self.busy_since = clock()
                tag = event.tag
                if tag is _NEW:
                    self._requesting = False
                    if event.success:
                        self._calls += 1
                        self._guarded(self._accept, event)
                    with self._lock:  # never a request after the shutdown began
                        if not self._stopping:
                            self._request()
                elif tag is _SHUTDOWN:
                    self._shutdown_done = True
                else:
                    if type(tag) is _Finished or type(tag) is _Closed:
                        self._calls -= 1
                    self._guarded(tag.done, event)
                event = None  # an event may hold the last reference to a finished call
                self.busy_since = 0.0
                if self._shutdown_done and not self._calls and not self._requesting:
                    break
        except BaseException:  # the liveness check reports it (alive() is False)
            self._failed = True
            with contextlib.suppress(Exception):
                log.exception("grpc_loop_failed")
            raise
        finally:
            if self._shutdown_done:  # a server not shut down would wait on its calls here
                with self._lock:
                    self._server.destroy()
            self._stopped.set()
            self._others.shutdown(wait=False)

    @staticmethod
    def _guarded(step: Callable[[Any], None], event: Any) -> None:
        """One step of the loop; a failure is logged and costs that call only (its
        client sees it end, or its deadline), never the loop."""
        try:
            step(event)
        except Exception:
            with contextlib.suppress(Exception):  # a log that cannot write stops nothing
                log.exception("grpc_event_failed")
            call = getattr(event, "call", None) or getattr(getattr(event, "tag", None), "call",
                                                             None)  # fmt: skip
            if call is not None:
                with contextlib.suppress(Exception):
                    call.cancel()
                # the close that ends the call's count (an error if one is pending already)
                with contextlib.suppress(Exception):
                    call.start_server_batch((cygrpc.ReceiveCloseOnServerOperation(0),),
                                            _FINISHED)  # fmt: skip

    def _accept(self, event: Any) -> None:
        call = event.call
        details = event.call_details
        if details.method == self._fast_method:
            call.start_server_batch((cygrpc.ReceiveMessageOperation(0),), _Received(self, call))
            return
        inline = details.method in self._inline
        bridged = _Bridged(self, call, details, event.invocation_metadata, inline=inline)
        call.start_server_batch((cygrpc.ReceiveCloseOnServerOperation(0),), bridged.closed)
        if inline:
            call.start_server_batch((cygrpc.ReceiveMessageOperation(0),), _InlineReceived(bridged))
            return
        try:
            self._others.submit(bridged.run)
        except RuntimeError:  # shutting down: refuse the call
            call.cancel()

    def _handler(self, method: str, metadata: Any) -> grpc.RpcMethodHandler | None:
        found = self._registered.get(method)
        if found is not None:
            return found
        details = _HandlerCallDetails(method, metadata)
        for generic in self._generic:
            found = generic.service(details)
            if found is not None:
                return found
        return None

    # -- the fast method ---------------------------------------------------------------

    def _answer(self, call: Any, data: bytes) -> None:
        """Loop thread: the request arrived."""
        try:
            request = self._fast.decode(data)
        except Exception:  # noqa: BLE001 - what grpcio answers a request it cannot read
            _finish(call, None, grpc.StatusCode.INTERNAL, "Exception deserializing request!")
            return
        try:
            answer = self._fast.cached(request)
        except Exception:
            log.exception("check_failed_on_loop")
            _finish(call, None, grpc.StatusCode.UNKNOWN, "Exception calling application")
            return
        if answer is not None:
            _finish(call, answer)
            return
        try:
            self._pool.submit(self._answer_fully, call, request)
        except RuntimeError:  # the pool is shut down: the process is stopping
            _finish(call, None, grpc.StatusCode.UNAVAILABLE, "stopping")

    def _answer_fully(self, call: Any, request: Any) -> None:
        """A pool thread: whatever the answer takes (core's batches are thread-safe)."""
        try:
            answer = self._fast.full(request)
        except Exception:
            log.exception("check_failed")
            _finish(call, None, grpc.StatusCode.UNKNOWN, "Exception calling application")
            return
        _finish(call, answer)


def _bound(address: str, port: int) -> int:
    if port == 0:  # core reports no reason
        raise RuntimeError(f"failed to bind to address {address}")
    return int(port)


class _Finished(_Tag):
    """The last batch of a fast call (message, status, close) completed."""

    __slots__ = ()

    def done(self, event: Any) -> None:
        pass


_FINISHED = _Finished()


class _Ignored(_Tag):
    """A batch nobody waits for (an inline call's status: its close is counted)."""

    __slots__ = ()

    def done(self, event: Any) -> None:
        pass


_IGNORED = _Ignored()


def _finish(call: Any, message: bytes | None, code: grpc.StatusCode = grpc.StatusCode.OK,
            details: str = "") -> None:  # fmt: skip
    """One batch: initial metadata, the message (if any), the status, and the close."""
    ops = [cygrpc.SendInitialMetadataOperation(None, 0)]
    if message is not None:
        ops.append(cygrpc.SendMessageOperation(message, 0))
    ops.append(cygrpc.SendStatusFromServerOperation(None, _CODES[code], details.encode(), 0))
    ops.append(cygrpc.ReceiveCloseOnServerOperation(0))
    call.start_server_batch(ops, _FINISHED)


class _Received(_Tag):
    """A fast call's request message arrived (or did not: then a status)."""

    __slots__ = ("call", "server")

    def __init__(self, server: CoreServer, call: Any) -> None:
        self.server = server
        self.call = call

    def done(self, event: Any) -> None:
        data = event.batch_operations[0].message() if event.success else None
        if data is None:  # no message (a client that half-closed at once), or cancelled
            _finish(self.call, None, grpc.StatusCode.INTERNAL, "Expected one request message")
            return
        self.server._answer(self.call, data)


class _InlineReceived(_Tag):
    """An inline call's request message arrived: run its handler on the loop."""

    __slots__ = ("bridged",)

    def __init__(self, bridged: _Bridged) -> None:
        self.bridged = bridged

    @property
    def call(self) -> Any:
        """The call (what a failing step cancels)."""
        return self.bridged.call

    def done(self, event: Any) -> None:
        data = event.batch_operations[0].message() if event.success else None
        self.bridged.run(_END if data is None else data)


class _HandlerCallDetails(NamedTuple):
    """What a generic handler looks a method up by (grpc.HandlerCallDetails)."""

    method: str
    invocation_metadata: Any


class _Closed(_Tag):
    """A bridged call ended (status sent, or the client cancelled or timed out)."""

    __slots__ = ("bridged",)

    def __init__(self, bridged: _Bridged) -> None:
        self.bridged = bridged

    def done(self, event: Any) -> None:
        cancelled = not event.success or event.batch_operations[0].cancelled()
        self.bridged.ended(cancelled)


class _Batch(_Tag):
    """A batch a bridged call's thread waits for."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def done(self, event: Any) -> None:
        self.events.put(event)

    def wait(self, stopped: threading.Event) -> Any:
        """The batch's event, or None once the loop has ended (nothing will come)."""
        while True:
            try:
                return self.events.get(timeout=0.5)
            except queue.Empty:
                if stopped.is_set():
                    return None


class _Sender(_Tag):
    """``send_response_callback`` of a non-blocking streaming handler: responses go out
    one batch at a time, in order, started from whichever thread sends or from the loop
    when the previous send completed; ``None`` ends the call with its status."""

    def __init__(self, bridged: _Bridged, serialize: Callable[[Any], bytes] | None) -> None:
        self.bridged = bridged
        self.serialize = serialize
        self.queue: collections.deque[Any] = collections.deque()
        self.lock = threading.Lock()
        self.busy = False
        self.over = False

    def __call__(self, response: Any) -> None:
        with self.lock:
            if self.over:
                return
            self.queue.append(response)
            if self.busy:
                return
            self.busy = True
        self._next()

    def done(self, event: Any) -> None:  # the loop thread: the previous send completed
        if not event.success:
            with self.lock:
                self.over, self.busy = True, False
                self.queue.clear()
            return
        self._next()

    def _next(self) -> None:
        with self.lock:
            if self.over or not self.queue:
                self.busy = False
                return
            response = self.queue.popleft()
        bridged = self.bridged
        ops: list[Any] = []
        bridged._initial(ops)
        if response is not None:
            try:
                ops.append(cygrpc.SendMessageOperation(
                    _serialized(response, self.serialize, bridged), 0))  # fmt: skip
            except _Aborted:
                response = None  # the status says what went wrong
        if response is None:
            with self.lock:
                self.over = True
            ops.append(bridged.context.status_operation())
        if bridged.call.start_server_batch(ops, self):
            with self.lock:  # refused: the call is gone
                self.over, self.busy = True, False


class _Cancelled(grpc.RpcError):  # type: ignore[misc]
    """The client cancelled (or its deadline passed) while the handler read requests."""


class _Aborted(Exception):
    """``context.abort`` was called."""


class _Bridged:
    """One call of any other method, run by its grpcio handler on a thread."""

    def __init__(self, server: CoreServer, call: Any, details: Any, metadata: Any,
                 inline: bool = False) -> None:  # fmt: skip
        self.server = server
        #: run on the loop thread: no batch may be waited for
        self.inline = inline
        self.call = call
        self.method = details.method.decode("utf-8", "replace")
        self.deadline = float(details.deadline)
        self.metadata = tuple(metadata or ())
        self.closed = _Closed(self)
        #: a handler may read on one thread while it sends on another: receives and
        #: sends wait on batches of their own, and sends go one at a time
        self.receiving = _Batch()
        self.sending = _Batch()
        self.send_lock = threading.Lock()
        self.lock = threading.Lock()
        self.active = True
        self.cancelled = False
        self.callbacks: list[Callable[[], None]] = []
        self.initial_sent = False
        self.last: Any = None
        self.context = _Context(self)

    # the loop thread
    def ended(self, cancelled: bool) -> None:
        with self.lock:
            self.active = False
            self.cancelled = cancelled
            callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("grpc_callback_failed", method=self.method)

    # the handler's thread
    def _run_batch(self, ops: list[Any], batch: _Batch | None = None) -> bool:
        """Run one batch (a send unless ``batch`` says otherwise); False when it failed
        (the call is gone, or core refused the batch)."""
        if self.inline:  # only the status batch: started, not waited for
            self.call.start_server_batch(ops, _IGNORED)
            return True
        if batch is None:
            with self.send_lock:
                return self._wait_for(ops, self.sending)
        return self._wait_for(ops, batch)

    def _wait_for(self, ops: list[Any], batch: _Batch) -> bool:
        if self.call.start_server_batch(ops, batch):  # a refused batch: no event comes
            return False
        event = batch.wait(self.server._stopped)
        if batch is self.receiving:
            self.last = event
        return event is not None and bool(event.success)

    def _initial(self, ops: list[Any], metadata: Any = None) -> None:
        if not self.initial_sent:
            self.initial_sent = True
            ops.append(cygrpc.SendInitialMetadataOperation(metadata, 0))

    def send_initial(self, metadata: Any) -> None:
        """``context.send_initial_metadata``."""
        if self.initial_sent:
            raise ValueError("initial metadata already sent")
        ops: list[Any] = []
        self._initial(ops, tuple(metadata))
        self._run_batch(ops)

    def receive(self, deserialize: Callable[[bytes], Any] | None) -> Any:
        """The next request, or :data:`_END` when the client has no more.

        A half-close is a receive that succeeds without a message; a receive that fails
        means the call is gone (cancelled, past its deadline, or the server stopping),
        whether or not the loop has taken in the call's end yet."""
        ok = self._run_batch([cygrpc.ReceiveMessageOperation(0)], self.receiving)
        if not ok:
            if self.active:  # refused or failed while the call lives on: end it
                self.call.cancel()
            raise _Cancelled
        data = self.last.batch_operations[0].message()
        if data is not None:
            return self.decode(data, deserialize)
        if not self.cancelled:
            # a cancel also ends the receive without a message, and its end event is
            # often queued right behind: an empty batch completes after what is
            # already queued, so an end queued by then has been taken in (one queued
            # later still reads as a half-close, as with grpcio's server)
            self._run_batch([], self.receiving)
        if self.cancelled:
            raise _Cancelled
        return _END

    def decode(self, data: bytes, deserialize: Callable[[bytes], Any] | None) -> Any:
        """A request message as the handler takes it."""
        if deserialize is None:
            return data
        try:
            return deserialize(data)
        except Exception as exc:
            self.context.set_code(grpc.StatusCode.INTERNAL)
            self.context.set_details("Exception deserializing request!")
            raise _Aborted from exc

    def send(self, response: Any, serialize: Callable[[Any], bytes] | None) -> bool:
        """Send one streamed response; False once the call is gone."""
        ops: list[Any] = []
        self._initial(ops)
        ops.append(cygrpc.SendMessageOperation(_serialized(response, serialize, self), 0))
        return self._run_batch(ops)

    def finish(self, response: Any = None, serialize: Callable[[Any], bytes] | None = None,
               has_response: bool = False) -> None:  # fmt: skip
        """Send the status (with the unary response when there is one)."""
        ops: list[Any] = []
        context = self.context
        if has_response and context.code_ in (None, grpc.StatusCode.OK):
            try:
                wire = _serialized(response, serialize, self)
            except _Aborted:
                wire = None
            if wire is not None:
                self._initial(ops)
                ops.append(cygrpc.SendMessageOperation(wire, 0))
        self._initial(ops)
        ops.append(context.status_operation())
        self._run_batch(ops)

    def requests(self, deserialize: Callable[[bytes], Any] | None) -> Iterator[Any]:
        """The request stream of a client-streaming method."""
        while True:
            if not self.context.is_active():
                if self.cancelled:  # as grpcio: a cancelled stream is not a complete one
                    raise _Cancelled
                return
            item = self.receive(deserialize)
            if item is _END:
                return
            yield item

    def run(self, received: Any = None) -> None:
        """Find the handler, run it, send what it returns (a thread of the other pool;
        an inline call's on the loop, with the request message ``received``)."""
        context = self.context
        try:
            handler = self.server._handler(self.method, self.metadata)
        except Exception:
            log.exception("grpc_handler_lookup_failed", method=self.method)
            context.set_code(grpc.StatusCode.UNKNOWN)
            context.set_details("Error in service handler!")
            self.finish()
            return
        if handler is None:
            context.set_code(grpc.StatusCode.UNIMPLEMENTED)
            context.set_details("Method not found!")
            self.finish()
            return
        if self.inline and (handler.request_streaming or handler.response_streaming):
            context.set_code(grpc.StatusCode.INTERNAL)
            context.set_details("a streaming method cannot run on the loop")
            self.finish()
            return
        try:
            if handler.request_streaming:
                request: Any = self.requests(handler.request_deserializer)
            else:
                if received is None:
                    request = self.receive(handler.request_deserializer)
                elif received is _END:
                    request = _END
                else:
                    request = self.decode(received, handler.request_deserializer)
                if request is _END:
                    context.set_code(grpc.StatusCode.INTERNAL)
                    context.set_details("Expected one request message")
                    self.finish()
                    return
            behaviour = _behaviour(handler)
            if getattr(behaviour, "experimental_non_blocking", False) and (
                handler.response_streaming and not handler.request_streaming
            ):
                # it sends through a callback (health Watch): no thread is held
                sender = _Sender(self, handler.response_serializer)
                non_blocking: Any = behaviour
                non_blocking(request, context, send_response_callback=sender)
                return
            if handler.response_streaming:
                for response in behaviour(request, context):
                    if not context.is_active() or not self.send(
                        response, handler.response_serializer
                    ):
                        return
                self.finish()
            else:
                response = behaviour(request, context)
                self.finish(response, handler.response_serializer, has_response=True)
        except _Aborted:
            if context.code_ in (None, grpc.StatusCode.OK):
                context.set_code(grpc.StatusCode.UNKNOWN)
            self.finish()
        except _Cancelled:
            pass  # the call is gone: nobody to answer
        except Exception:
            if context.is_active():
                log.exception("grpc_handler_failed", method=self.method)
                context.set_code(grpc.StatusCode.UNKNOWN)
                context.set_details("Exception calling application")
                self.finish()


_END = object()


def _behaviour(handler: grpc.RpcMethodHandler) -> Callable[[Any, Any], Any]:
    behaviour: Callable[[Any, Any], Any]
    if handler.request_streaming:
        behaviour = handler.stream_stream if handler.response_streaming else handler.stream_unary
    else:
        behaviour = handler.unary_stream if handler.response_streaming else handler.unary_unary
    return behaviour


def _serialized(response: Any, serialize: Callable[[Any], bytes] | None,
                bridged: _Bridged) -> bytes:  # fmt: skip
    if serialize is None:
        return bytes(response)
    try:
        return bytes(serialize(response))
    except Exception as exc:
        log.exception("grpc_serialize_failed", method=bridged.method)
        bridged.context.set_code(grpc.StatusCode.INTERNAL)
        bridged.context.set_details("Failed to serialize response!")
        raise _Aborted from exc


class _Context(grpc.ServicerContext):  # type: ignore[misc]
    """The :class:`grpc.ServicerContext` of a bridged call."""

    def __init__(self, bridged: _Bridged) -> None:
        self._bridged = bridged
        self.code_: grpc.StatusCode | None = None
        self.details_: str | None = None
        self.trailing: tuple[tuple[str, Any], ...] | None = None

    # RpcContext
    def is_active(self) -> bool:
        return self._bridged.active

    def time_remaining(self) -> float | None:
        remaining = self._bridged.deadline - time.time()
        return None if remaining > 1e9 else max(remaining, 0.0)

    def cancel(self) -> None:
        self._bridged.call.cancel()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._bridged.lock:
            if not self._bridged.active:
                return False
            self._bridged.callbacks.append(callback)
            return True

    # ServicerContext
    def invocation_metadata(self) -> Any:
        return self._bridged.metadata

    def peer(self) -> str:
        return str(self._bridged.call.peer().decode("utf-8", "replace"))

    def peer_identities(self) -> Sequence[bytes] | None:
        return cygrpc.peer_identities(self._bridged.call)  # type: ignore[no-any-return]

    def peer_identity_key(self) -> str | None:
        key = cygrpc.peer_identity_key(self._bridged.call)
        return None if key is None else key.decode("utf-8", "replace")

    def auth_context(self) -> Mapping[str, Sequence[bytes]]:
        found = cygrpc.auth_context(self._bridged.call) or {}
        return {k.decode("utf-8", "replace") if isinstance(k, bytes) else k: v
                for k, v in found.items()}  # fmt: skip

    def set_compression(self, compression: grpc.Compression) -> None:
        raise ValueError("per-call compression is not offered by this server")

    def send_initial_metadata(self, initial_metadata: Any) -> None:
        self._bridged.send_initial(initial_metadata)

    def status_operation(self) -> Any:
        """The operation that sends the status this context holds (OK when unset)."""
        code = self.code_ or grpc.StatusCode.OK
        details = (self.details_ or "").encode("utf-8", "replace")
        return cygrpc.SendStatusFromServerOperation(self.trailing, _CODES[code], details, 0)

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self.trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> Any:
        return self.trailing

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        if code == grpc.StatusCode.OK:
            code = grpc.StatusCode.UNKNOWN
        self.code_, self.details_ = code, details
        raise _Aborted(details)

    def abort_with_status(self, status: Any) -> None:
        self.set_trailing_metadata(status.trailing_metadata)
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code_ = code

    def code(self) -> grpc.StatusCode | None:
        return self.code_

    def set_details(self, details: str) -> None:
        self.details_ = details

    def details(self) -> str | None:
        return self.details_

    def disable_next_message_compression(self) -> None:
        pass  # this server compresses nothing
