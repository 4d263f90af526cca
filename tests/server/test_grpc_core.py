"""The gRPC call loop on gRPC core (server/grpc_core.py), driven by real grpcio clients:
the fast method on the loop and on the pool, every other method through grpcio's own
handlers (all four kinds, context, abort, errors, cancellation), bounds, deadlines,
graceful and hard stops, the liveness view of the loop; and in the app: the same
answers as grpcio's server, health Watch streams that never take a Check thread, and
the fallback to grpcio."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from structlog.testing import capture_logs

from extauthz import config as config_mod
from extauthz.errors import ConfigError
from extauthz.server import grpc_core
from extauthz.server.app import App
from extauthz.server.callpool import CallPool
from extauthz.server.grpc_core import CoreServer, FastMethod
from tests.service_client import Client, wait_for

FAST = "/test.Echo/Fast"


class Behaviour:
    """What the fast method does; tests swap its parts."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()
        self.full_threads: list[str] = []
        self.cached_delay = 0.0

    def decode(self, data: bytes) -> bytes:
        if data.startswith(b"bad"):
            raise ValueError("cannot read")
        return data

    def cached(self, request: bytes) -> bytes | None:
        if self.cached_delay:
            time.sleep(self.cached_delay)
        if request.startswith(b"boom-cached"):
            raise RuntimeError("cached failed")
        if request.startswith(b"slow") or request.startswith(b"boom"):
            return None
        return b"cached:" + request

    def full(self, request: bytes) -> bytes:
        self.full_threads.append(threading.current_thread().name)
        if request.startswith(b"boom"):
            raise RuntimeError("full failed")
        self.release.wait(10)
        return b"full:" + request


def _stream_handler() -> grpc.GenericRpcHandler:
    """One method of each kind, answering raw bytes."""

    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        if request == b"abort":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "told to abort")
        if request == b"raise":
            raise RuntimeError("handler failed")
        if request == b"code":
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details("no such thing")
            return b""
        metadata = dict(context.invocation_metadata())
        remaining = context.time_remaining()
        context.set_trailing_metadata((("x-trailer", "t"),))
        peer = context.peer()
        return b"%s|%s|%d|%s" % (request, metadata.get("x-test", "").encode(),
                                 int(remaining is not None and 0 < remaining <= 30),
                                 peer.split(":")[0].encode())  # fmt: skip

    def unary_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        context.send_initial_metadata((("x-initial", "i"),))
        for i in range(int(request)):
            yield b"%d" % i

    def stream_unary(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return b"+".join(requests)

    def stream_stream(requests: Iterator[bytes], context: grpc.ServicerContext
                      ) -> Iterator[bytes]:  # fmt: skip
        for request in requests:
            yield request.upper()

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(unary_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(stream_unary),
        "Both": grpc.stream_stream_rpc_method_handler(stream_stream),
    }
    return grpc.method_handlers_generic_handler("test.Echo", handlers)


class Endless:
    """A server-streaming method that streams until the client goes; counts callbacks."""

    def __init__(self) -> None:
        self.ended = threading.Event()
        self.running = 0

    def handler(self) -> dict[str, grpc.RpcMethodHandler]:
        def forever(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            gone = threading.Event()
            context.add_callback(gone.set)
            context.add_callback(self.ended.set)
            self.running += 1
            try:
                yield b"first"
                gone.wait(20)
            finally:
                self.running -= 1

        return {"Forever": grpc.unary_stream_rpc_method_handler(forever)}


@pytest.fixture
def behaviour() -> Behaviour:
    return Behaviour()


@pytest.fixture
def endless() -> Endless:
    return Endless()


@pytest.fixture
def served(behaviour: Behaviour, endless: Endless) -> Iterator[tuple[CoreServer, grpc.Channel]]:
    pool = CallPool(2, thread_name_prefix="check")
    fast = FastMethod(FAST, behaviour.decode, behaviour.cached, behaviour.full)
    server = CoreServer(fast, pool, options=[("grpc.max_receive_message_length", 1024)],
                        other_threads=2, inline=("/test.Echo/Unary",))  # fmt: skip
    server.add_generic_rpc_handlers([_stream_handler()])
    server.add_registered_method_handlers("test.Endless", endless.handler())
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield server, channel
    behaviour.release.set()
    channel.close()
    assert server.stop(0).wait(5)
    pool.shutdown(wait=False)


def fast_call(channel: grpc.Channel) -> Any:
    return channel.unary_unary(FAST)


def error_of(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def test_cached_answers_come_from_the_loop_and_the_rest_from_the_pool(
    served: tuple[CoreServer, grpc.Channel], behaviour: Behaviour
) -> None:
    _server, channel = served
    check = fast_call(channel)
    assert check(b"hello", timeout=5) == b"cached:hello"
    assert behaviour.full_threads == []
    assert check(b"slow-1", timeout=5) == b"full:slow-1"
    assert behaviour.full_threads
    assert behaviour.full_threads[0].startswith("check")


def test_a_request_on_the_pool_never_holds_up_cached_answers(
    served: tuple[CoreServer, grpc.Channel], behaviour: Behaviour
) -> None:
    _server, channel = served
    check = fast_call(channel)
    behaviour.release.clear()
    waiting = [check.future(b"slow-%d" % i, timeout=10) for i in range(2)]  # both pool threads
    assert wait_for(lambda: len(behaviour.full_threads) == 2)
    started = time.monotonic()
    for i in range(50):
        assert check(b"c%d" % i, timeout=5) == b"cached:c%d" % i
    assert time.monotonic() - started < 5
    assert not any(w.done() for w in waiting)
    behaviour.release.set()
    assert sorted(w.result() for w in waiting) == [b"full:slow-0", b"full:slow-1"]


def test_failures_become_statuses_and_the_loop_goes_on(
    served: tuple[CoreServer, grpc.Channel],
) -> None:
    _server, channel = served
    check = fast_call(channel)
    unreadable = error_of(lambda: check(b"bad bytes", timeout=5))
    assert unreadable.code() == grpc.StatusCode.INTERNAL
    assert unreadable.details() == "Exception deserializing request!"
    for request in (b"boom-cached", b"boom-full"):
        failed = error_of(lambda r=request: check(r, timeout=5))  # type: ignore[misc]
        assert failed.code() == grpc.StatusCode.UNKNOWN
        assert "failed" not in (failed.details() or "")  # no internal detail leaks
    too_big = error_of(lambda: check(b"x" * 2048, timeout=5))
    assert too_big.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert check(b"", timeout=5) == b"cached:"  # an empty message is a message
    assert check(b"still", timeout=5) == b"cached:still"


def test_a_failing_step_costs_its_call_only(
    served: tuple[CoreServer, grpc.Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, channel = served
    check = fast_call(channel)
    real = grpc_core._finish
    failures = iter([True])

    def finish_once_broken(*args: Any, **kwargs: Any) -> None:
        if next(failures, False):
            raise RuntimeError("core refused the batch")
        real(*args, **kwargs)

    monkeypatch.setattr(grpc_core, "_finish", finish_once_broken)
    with capture_logs() as logs:
        broken = error_of(lambda: check(b"first", timeout=5))
    assert broken.code() == grpc.StatusCode.CANCELLED
    assert any(line["event"] == "grpc_event_failed" for line in logs)
    assert check(b"second", timeout=5) == b"cached:second"
    assert server.alive(1.0)


def test_a_client_deadline_does_not_hurt_the_server(
    served: tuple[CoreServer, grpc.Channel], behaviour: Behaviour
) -> None:
    server, channel = served
    check = fast_call(channel)
    behaviour.release.clear()
    late = error_of(lambda: check(b"slow-late", timeout=0.3))
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    behaviour.release.set()  # the pool thread answers a call that is gone
    assert check(b"after", timeout=5) == b"cached:after"
    assert server.alive(1.0)


def test_every_kind_of_other_method_runs_through_grpcio_handlers(
    served: tuple[CoreServer, grpc.Channel],
) -> None:
    _server, channel = served
    unary = channel.unary_unary("/test.Echo/Unary")
    answer, call = unary.with_call(b"hi", metadata=(("x-test", "m"),), timeout=5)
    assert answer == b"hi|m|1|ipv4"
    assert ("x-trailer", "t") in call.trailing_metadata()
    aborted = error_of(lambda: unary(b"abort", timeout=5))
    assert (aborted.code(), aborted.details()) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                   "told to abort")  # fmt: skip
    coded = error_of(lambda: unary(b"code", timeout=5))
    assert (coded.code(), coded.details()) == (grpc.StatusCode.NOT_FOUND, "no such thing")
    raised = error_of(lambda: unary(b"raise", timeout=5))
    assert raised.code() == grpc.StatusCode.UNKNOWN
    assert raised.details() == "Exception calling application"

    streamed = channel.unary_stream("/test.Echo/ServerStream")(b"3", timeout=5)
    assert list(streamed) == [b"0", b"1", b"2"]
    assert ("x-initial", "i") in streamed.initial_metadata()
    joined = channel.stream_unary("/test.Echo/ClientStream")(iter([b"a", b"b", b"c"]), timeout=5)
    assert joined == b"a+b+c"
    both = channel.stream_stream("/test.Echo/Both")(iter([b"x", b"y"]), timeout=5)
    assert list(both) == [b"X", b"Y"]

    missing = error_of(lambda: channel.unary_unary("/test.Echo/Nope")(b"", timeout=5))
    assert missing.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_cancelled_stream_runs_its_callbacks_and_frees_its_thread(
    served: tuple[CoreServer, grpc.Channel], endless: Endless
) -> None:
    _server, channel = served
    forever = channel.unary_stream("/test.Endless/Forever")
    for _round in range(3):  # more rounds than the two threads of the other pool
        endless.ended.clear()
        stream = forever(b"", timeout=30)
        assert next(stream) == b"first"
        stream.cancel()
        assert endless.ended.wait(5)
        assert wait_for(lambda: endless.running == 0)


def test_inline_methods_answer_while_every_other_thread_is_streaming(
    served: tuple[CoreServer, grpc.Channel], endless: Endless
) -> None:
    _server, channel = served
    forever = channel.unary_stream("/test.Endless/Forever")
    streams = [forever(b"", timeout=30) for _ in range(2)]
    for stream in streams:
        assert next(stream) == b"first"
    unary = channel.unary_unary("/test.Echo/Unary")
    assert unary(b"inline", timeout=2).startswith(b"inline|")
    assert fast_call(channel)(b"fast", timeout=2) == b"cached:fast"
    queued = channel.unary_stream("/test.Echo/ServerStream")(b"1", timeout=1)
    assert error_of(lambda: list(queued)).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for stream in streams:
        stream.cancel()


def _extra_handlers(stream_outcome: list[str]) -> grpc.GenericRpcHandler:
    """A bidirectional handler that reads on a thread of its own while it sends, a
    client-streaming one that records how its request stream ended."""

    def chat(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        got: queue.Queue[bytes | None] = queue.Queue()
        failed: list[str] = []

        def reader() -> None:
            try:
                for request in requests:
                    got.put(request)
            except Exception as exc:
                failed.append(repr(exc))
            got.put(None)

        threading.Thread(target=reader, daemon=True).start()
        for i in range(100):
            yield b"tick%d" % i
        count = 0
        while got.get(timeout=5) is not None:
            count += 1
        yield b"read %d %s" % (count, ";".join(failed).encode())

    def collect(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        seen = []
        try:
            for request in requests:
                seen.append(request)
        except grpc.RpcError:
            stream_outcome.append("raised")
            raise
        stream_outcome.append("completed")
        return b"+".join(seen)

    return grpc.method_handlers_generic_handler("test.More", {
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
    })  # fmt: skip


class _BrokenLookup(grpc.GenericRpcHandler):  # type: ignore[misc]
    def service(self, details: Any) -> None:
        if details.method.startswith("/test.Broken/"):
            raise KeyError("lookup failed")


@pytest.fixture
def more(behaviour: Behaviour) -> Iterator[tuple[CoreServer, grpc.Channel, list[str]]]:
    outcome: list[str] = []
    pool = CallPool(2)
    fast = FastMethod(FAST, behaviour.decode, behaviour.cached, behaviour.full)
    server = CoreServer(fast, pool, other_threads=2,
                        inline=("/grpc.health.v1.Health/Check", "/test.Broken/Inline"))  # fmt: skip
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection((health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    server.add_generic_rpc_handlers([_BrokenLookup(), _extra_handlers(outcome)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield server, channel, outcome
    channel.close()
    assert server.stop(0).wait(5)
    pool.shutdown(wait=False)
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)


def test_health_watch_streams_hold_no_thread(
    more: tuple[CoreServer, grpc.Channel, list[str]],
) -> None:
    _server, channel, _outcome = more
    stub = health_pb2_grpc.HealthStub(channel)
    # three times as many streams as the other pool has threads
    watches = [stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)
               for _ in range(6)]  # fmt: skip
    for watch in watches:
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    listed = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in listed for s in r.list_services_response.service}
    assert health.SERVICE_NAME in names
    for watch in watches:
        watch.cancel()


def test_a_handler_may_read_on_one_thread_while_it_sends_on_another(
    more: tuple[CoreServer, grpc.Channel, list[str]],
) -> None:
    _server, channel, _outcome = more
    requests = (b"r%d" % i for i in range(100))
    got = list(channel.stream_stream("/test.More/Chat")(requests, timeout=10))
    assert len(got) == 101
    assert got[-1] == b"read 100 "


@pytest.mark.parametrize("attempt", range(5))  # the end may come after the receive
def test_a_cancelled_request_stream_is_not_a_complete_one(
    more: tuple[CoreServer, grpc.Channel, list[str]], attempt: int
) -> None:
    _server, channel, outcome = more
    sent = threading.Event()

    def requests() -> Iterator[bytes]:
        yield b"a"
        yield b"b"
        sent.set()
        time.sleep(10)  # the client goes before ending its stream

    call = channel.stream_unary("/test.More/Collect").future(requests(), timeout=10)
    assert sent.wait(5)
    time.sleep(0.3)
    call.cancel()
    assert wait_for(lambda: outcome == ["raised"])


def test_a_failing_handler_lookup_is_answered(
    more: tuple[CoreServer, grpc.Channel, list[str]],
) -> None:
    _server, channel, _outcome = more
    for method in ("/test.Broken/Pooled", "/test.Broken/Inline"):
        failed = error_of(lambda m=method: channel.unary_unary(m)(b"", timeout=5))  # type: ignore[misc]
        assert failed.code() == grpc.StatusCode.UNKNOWN, method


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_loop_that_died_is_not_alive_and_stops_at_once(
    served: tuple[CoreServer, grpc.Channel],
) -> None:
    server, channel = served

    def die(step: Any, event: Any) -> None:
        raise SystemExit("the loop's thread ends")

    server._guarded = die  # type: ignore[method-assign]
    with pytest.raises(grpc.RpcError):
        fast_call(channel)(b"x", timeout=1)
    assert wait_for(lambda: not server.alive(5.0))
    assert server.stop(0).wait(2)


def start_server(behaviour: Behaviour, pool: CallPool) -> tuple[CoreServer, int]:
    """A started server of the fast method alone, on its own pool (tests that stop it)."""
    server = CoreServer(FastMethod(FAST, behaviour.decode, behaviour.cached, behaviour.full),
                        pool)  # fmt: skip
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def test_graceful_stop_lets_calls_in_flight_finish_and_refuses_new_ones(
    behaviour: Behaviour,
) -> None:
    pool = CallPool(2)
    server, port = start_server(behaviour, pool)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = fast_call(channel)
        assert check(b"warm", timeout=5) == b"cached:warm"
        behaviour.release.clear()
        in_flight = check.future(b"slow-inflight", timeout=10)
        assert wait_for(lambda: len(behaviour.full_threads) == 1)
        stopped = server.stop(grace=5)
        assert not stopped.is_set(), "stopped with a call in flight"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as fresh:
            refused = error_of(lambda: fast_call(fresh)(b"new", timeout=2))
            # not answered: nothing listens any more (or, on a loaded machine, not yet
            # refused within the deadline)
            assert refused.code() in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.DEADLINE_EXCEEDED), refused  # fmt: skip
        behaviour.release.set()
        assert in_flight.result() == b"full:slow-inflight"
        assert stopped.wait(5)
    pool.shutdown(wait=False)


def test_a_stop_past_its_grace_cancels_what_is_left(behaviour: Behaviour) -> None:
    pool = CallPool(1)
    server, port = start_server(behaviour, pool)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        behaviour.release.clear()
        stuck = fast_call(channel).future(b"slow-stuck", timeout=20)
        assert wait_for(lambda: len(behaviour.full_threads) == 1)
        started = time.monotonic()
        stopped = server.stop(grace=0.5)
        # the client hears at once after the grace, while the handler is still stuck
        with pytest.raises(grpc.RpcError) as raised:
            stuck.result(timeout=5)
        assert raised.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
        assert 0.4 < time.monotonic() - started < 4
        assert not stopped.is_set()  # the loop ends once the handler lets go of the call
        behaviour.release.set()
        assert stopped.wait(5)
    pool.shutdown(wait=False)


def test_liveness_sees_a_loop_stuck_on_one_event(
    served: tuple[CoreServer, grpc.Channel], behaviour: Behaviour
) -> None:
    server, channel = served
    assert server.alive(0.2)
    behaviour.cached_delay = 1.0
    pending = fast_call(channel).future(b"sleepy", timeout=10)
    assert wait_for(lambda: not server.alive(0.2), timeout=3)
    assert pending.result() == b"cached:sleepy"
    behaviour.cached_delay = 0.0
    assert wait_for(lambda: server.alive(0.2))


def test_a_busy_port_is_an_error(behaviour: Behaviour) -> None:
    fast = FastMethod(FAST, behaviour.decode, behaviour.cached, behaviour.full)
    no_sharing = [("grpc.so_reuseport", 0)]
    first = CoreServer(fast, CallPool(1), options=no_sharing)
    port = first.add_insecure_port("127.0.0.1:0")
    second = CoreServer(fast, CallPool(1), options=no_sharing)
    with pytest.raises(RuntimeError, match="failed to bind"):
        second.add_insecure_port(f"127.0.0.1:{port}")
    assert first.stop(0).wait(1)
    assert second.stop(0).wait(1)


# -- in the app --------------------------------------------------------------------------


def _app(write_config: Callable[..., Path], implementation: str) -> App:
    config = config_mod.load(write_config(server={"grpc_server": implementation}))
    app = App(config)
    app.start()
    return app


@pytest.fixture
def both_apps(write_config: Callable[..., Path]) -> Iterator[tuple[App, App]]:
    core = _app(write_config, "core")
    standard = _app(write_config, "grpcio")
    yield core, standard
    core.stop_now()
    standard.stop_now()


def test_the_loop_answers_what_grpcios_server_answers(
    both_apps: tuple[App, App], mint_token: Callable[..., str]
) -> None:
    core, standard = both_apps
    assert isinstance(core.server, CoreServer)
    assert not isinstance(standard.server, CoreServer)
    clients = [Client(app.grpc_port) for app in both_apps]
    for client in clients:
        assert wait_for(lambda c=client: c.status() == health_pb2.HealthCheckResponse.SERVING)  # type: ignore[misc]
    token = mint_token(email="a@example.test", roles=["r1"])
    cases: list[tuple[str | None, dict[str, Any]]] = [
        (token, {"path": "/x?y=1"}),
        (token, {"path": "/x?y=1"}),  # now cached
        (mint_token(scope="read"), {"path": "/admin/users", "method": "POST"}),
        (None, {}),
        ("not-a-token", {}),
        (token, {"path": "/a/../admin/users"}),
        (mint_token(exp=1), {}),
    ]
    for token_, kwargs in cases:
        answers = [client.check(token_, **kwargs) for client in clients]
        assert answers[0] == answers[1], (token_, kwargs)
    for client in clients:
        client.channel.close()


def test_health_watch_streams_never_take_a_check_thread(
    write_config: Callable[..., Path], mint_token: Callable[..., str]
) -> None:
    config = config_mod.load(write_config(server={"threads": 1, "grpc_server": "core"}))
    app = App(config)
    app.start()
    try:
        client = Client(app.grpc_port)
        assert wait_for(lambda: client.status() == health_pb2.HealthCheckResponse.SERVING)
        stub = health_pb2_grpc.HealthStub(client.channel)
        watches = [stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
                   for _ in range(4)]  # fmt: skip
        for watch in watches:
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        # every thread of the other pool streams; Checks (new tokens too) and health
        # Checks still answer, and the liveness self-check still passes
        assert client.check(mint_token())["decision"] == "allow"
        assert client.status("") == health_pb2.HealthCheckResponse.SERVING
        assert app._probe_grpc(2.0)
        app.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        for watch in watches:
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
        client.channel.close()
    finally:
        app.stop_now()


def test_without_the_core_layer_the_app_falls_back_to_grpcio(
    write_config: Callable[..., Path], mint_token: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(grpc_core, "available", lambda: False)
    with capture_logs() as logs:
        app = _app(write_config, "core")
    try:
        assert not isinstance(app.server, CoreServer)
        client = Client(app.grpc_port)
        assert wait_for(lambda: client.status() == health_pb2.HealthCheckResponse.SERVING)
        assert client.check(mint_token())["decision"] == "allow"
        client.channel.close()
    finally:
        app.stop_now()
    assert any(line["event"] == "grpc_core_unavailable" for line in logs)


def test_the_core_layer_is_there_in_the_grpcio_we_ship_with() -> None:
    assert grpc_core.available()


def test_an_unknown_grpc_server_setting_is_refused(write_config: Callable[..., Path]) -> None:
    with pytest.raises(ConfigError, match="grpc_server"):
        config_mod.load(write_config(server={"grpc_server": "fastest"}))
