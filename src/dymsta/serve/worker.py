"""The bounded inference pool of ``dymsta serve``: N worker threads, Q places to wait, a time limit per request.

A request takes a place (:meth:`InferencePool.admit`) before its upload is read. With all N + Q places taken it is
refused at once (:class:`QueueFull`, HTTP 503), so a burst cannot pile up uploads on disk or in memory. Its job then
runs on one of the N threads (:meth:`Admission.run`); past the time limit the request gets :class:`TimeLimit`
(HTTP 504). A thread cannot be stopped from outside, so a job that has started keeps its place until it ends, and
the request's clean-ups (its temporary folder) run then; a job still waiting is cancelled and cleaned up at once.

The model is shared by the threads. :class:`SerialRunner` lets one batch through it at a time (decoding of the
other requests goes on meanwhile): every runtime is then safe, and the intra-op threads of one model call are not
fought over by the next.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from dymsta.utils import get_logger

__all__ = ["Admission", "InferencePool", "QueueFull", "SerialRunner", "TimeLimit"]

log = get_logger(__name__)


class QueueFull(RuntimeError):
    """Every worker is busy and every waiting place is taken (HTTP 503)."""


class TimeLimit(RuntimeError):
    """A job ran (or waited) past the per-request time limit (HTTP 504)."""


class SerialRunner:
    """A model runner (``{stream: batch}`` -> logits) that takes one call at a time, whatever thread calls it.

    Args:
        runner: the runner to guard (:attr:`dymsta.engine.predict.Predictor.runner`).
        lock: the lock (shared with other users of the same model, e.g. attention maps).
    """

    def __init__(self, runner: Callable[[Any], Any], lock: threading.Lock) -> None:
        self.runner, self.lock = runner, lock

    def __call__(self, streams: Any) -> Any:
        with self.lock:
            return self.runner(streams)


class InferencePool:
    """``workers`` threads for decoding and inference, ``queue`` more requests allowed to wait, ``timeout`` s each.

    Args:
        workers: jobs that run at once (N >= 1).
        queue: requests that may wait for a worker beyond those running (Q >= 0).
        timeout: seconds from a job's submission (its wait included) to its answer.
    """

    def __init__(self, *, workers: int, queue: int, timeout: float) -> None:
        if workers < 1 or queue < 0 or not timeout > 0:
            raise ValueError(f"workers must be >= 1, queue >= 0 and timeout > 0, got {workers}, {queue}, {timeout}")
        self.workers, self.queue, self.timeout = workers, queue, float(timeout)
        self.places = workers + queue
        self._free = threading.BoundedSemaphore(self.places)
        self._held = 0
        self._count = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dymsta-serve")

    @property
    def held(self) -> int:
        """Places taken now: requests uploading, waiting or running."""
        return self._held

    def admit(self) -> Admission:
        """A place for one request, or :class:`QueueFull` when all ``workers + queue`` are taken."""
        if not self._free.acquire(blocking=False):
            raise QueueFull(f"the server is busy ({self.workers} running, {self.queue} waiting); retry shortly")
        with self._count:
            self._held += 1
        return Admission(self)

    def _release(self) -> None:
        with self._count:
            self._held -= 1
        self._free.release()

    def shutdown(self) -> None:
        """Stop taking jobs; jobs not started are cancelled, running ones finish in the background."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class Admission:
    """One request's place in an :class:`InferencePool`: at most one job, clean-ups, and the place's release.

    Use as a context manager: on exit the clean-ups run and the place is freed, at once, or when a job that
    has already started ends.
    """

    def __init__(self, pool: InferencePool) -> None:
        self._pool = pool
        self._future: Future | None = None
        self._cleanups: list[Callable[[], None]] = []
        self._closed = False

    def on_close(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` once the request and its job are both over (errors are logged, not raised)."""
        self._cleanups.append(cleanup)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on a worker thread; its result, its exception, or :class:`TimeLimit`."""
        if self._future is not None:
            raise RuntimeError("an admission runs one job")
        self._future = self._pool._executor.submit(fn, *args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(self._future), self._pool.timeout)
        except asyncio.TimeoutError:
            self._future.cancel()  # a job still waiting never starts; a running one cannot be stopped
            raise TimeLimit(f"the request took longer than the server's limit of {self._pool.timeout:g} s") from None

    def close(self) -> None:
        """Clean up and free the place now, or when the running job ends."""
        if self._closed:
            return
        self._closed = True
        future = self._future
        if future is not None and not future.done():
            future.add_done_callback(lambda _: self._finish())
        else:
            self._finish()

    def _finish(self) -> None:
        for cleanup in self._cleanups:
            try:
                cleanup()
            except Exception:  # noqa: BLE001 - a failed clean-up must not keep the place
                log.exception("clean-up after a request failed")
        self._pool._release()

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
