"""The threads grpcio's sync server runs each call on.

grpcio hands every call to an executor's ``submit`` and uses one thing of what it gets
back: ``add_done_callback`` (to count the call finished). A
``concurrent.futures.ThreadPoolExecutor`` builds, per call, a ``Future`` with its own
``Condition`` and lock, a work item, and takes three locks on the way; on a cached
Check that machinery cost more than the decision itself. This pool is one
``queue.SimpleQueue`` (a C queue) and a fixed set of threads; what ``submit`` returns
keeps done-callbacks and nothing else.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import structlog

log = structlog.get_logger("extauthz.server")

#: guards every call's done flag and callbacks (held for a few instructions at a time)
_LOCK = threading.Lock()


class Call:
    """One submitted call: run once by a pool thread, then its done-callbacks."""

    __slots__ = ("_args", "_callbacks", "_done", "_fn", "_kwargs")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._fn = fn
        self._args = args
        self._kwargs = kwargs
        self._callbacks: list[Callable[[Call], Any]] = []
        self._done = False

    def add_done_callback(self, fn: Callable[[Call], Any]) -> None:
        """Call ``fn(self)`` once the call has run (at once when it has already)."""
        with _LOCK:
            if not self._done:
                self._callbacks.append(fn)
                return
        fn(self)

    def done(self) -> bool:
        return self._done

    def run(self) -> None:
        try:
            self._fn(*self._args, **self._kwargs)
        except BaseException:  # grpcio handles a call's errors itself; never lose a thread
            log.exception("call_failed")
        with _LOCK:
            self._done = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("call_callback_failed")


class CallPool(futures.Executor):
    """A fixed pool of ``max_workers`` daemon threads fed by one queue."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "call") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._queue: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{thread_name_prefix}_{i}", daemon=True)
            for i in range(max_workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Queue ``fn(*args, **kwargs)``; ``RuntimeError`` once the pool is shut down."""
        if self._closed:
            raise RuntimeError("cannot schedule new calls after shutdown")
        call = Call(fn, args, kwargs)
        self._queue.put(call)
        return call

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; the threads finish what is queued, then stop (nothing is
        cancelled: ``cancel_futures`` is accepted for the Executor signature only)."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        get = self._queue.get
        while True:
            call = get()
            if call is None:
                return
            call.run()
