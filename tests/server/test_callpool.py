"""The pool grpcio's sync server runs calls on: every call runs once, with its
arguments, on one of a fixed set of threads; its done-callbacks run after it (at once
when added late), which is what grpcio counts finished calls by; a failing call
neither kills a thread nor skips its callbacks; shutdown finishes what is queued and
refuses the rest. And a real grpcio server on it answers, counting calls right."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest

from extauthz.server.callpool import Call, CallPool


def test_calls_run_with_their_arguments_and_then_their_callbacks() -> None:
    pool = CallPool(2)
    ran: list[Any] = []
    gate = threading.Event()
    call = pool.submit(lambda a, b=0: (gate.wait(5), ran.append((a, b))), 1, b=2)
    seen: list[Call] = []
    call.add_done_callback(seen.append)
    assert not call.done()
    assert seen == []
    gate.set()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ran == [(1, 2)]
    assert seen == [call]
    assert call.done()
    late: list[Call] = []
    call.add_done_callback(late.append)  # added after the call ran: at once
    assert late == [call]
    pool.shutdown()


def test_a_failing_call_keeps_its_thread_and_its_callbacks() -> None:
    pool = CallPool(1)
    done = threading.Event()
    failing = pool.submit(lambda: 1 / 0)
    failing.add_done_callback(lambda _call: done.set())
    assert done.wait(5)
    after = threading.Event()
    pool.submit(after.set)  # the only thread is still there
    assert after.wait(5)
    pool.shutdown()


def test_the_threads_run_at_once_up_to_their_number() -> None:
    pool = CallPool(4)
    barrier = threading.Barrier(4, timeout=5)
    calls = [pool.submit(barrier.wait) for _ in range(4)]
    deadline = time.monotonic() + 5
    while not all(c.done() for c in calls) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(c.done() for c in calls)
    assert not barrier.broken
    pool.shutdown()


def test_shutdown_finishes_the_queue_and_refuses_the_rest() -> None:
    pool = CallPool(1)
    gate = threading.Event()
    order: list[int] = []
    pool.submit(gate.wait, 5)
    for i in range(5):
        pool.submit(order.append, i)
    closing = threading.Thread(target=pool.shutdown)
    closing.start()
    deadline = time.monotonic() + 5
    while not pool._closed and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(RuntimeError):
        pool.submit(order.append, 99)
    gate.set()
    closing.join(5)
    assert not closing.is_alive()
    assert order == [0, 1, 2, 3, 4]
    assert not any(t.is_alive() for t in pool._threads)


def test_a_grpc_server_on_the_pool_answers_and_counts_calls_finished() -> None:
    """grpcio counts a call finished by the done-callback: with
    ``maximum_concurrent_rpcs=2``, a hundred calls one after the other are all answered
    only if each one's callback ran."""

    def echo(request: bytes, _context: Any) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "t.Echo", {"Call": grpc.unary_unary_rpc_method_handler(echo)}
    )
    pool = CallPool(2)
    server = grpc.server(pool, handlers=[handler], maximum_concurrent_rpcs=2)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/t.Echo/Call")
            for i in range(100):
                assert call(b"%d" % i, timeout=5) == b"%d" % i
    finally:
        server.stop(None)
        pool.shutdown()
