"""Micro-batching: images of concurrent requests gathered into one Guard call, run in worker threads.

Every request's images join one queue (one item per image). A collector task on the event loop waits for a free
worker, takes the oldest waiting image, waits at most ``max_wait`` (counted from when that image arrived) for
others until ``max_batch`` images are waiting, and hands the batch to that worker's thread; the answers go back to
each request's asyncio future in order. Each worker calls its own function (``fn`` or one of ``fns``): the service
gives every worker its own copy of the guard, so no model, hook or counter is ever shared between two threads.
One worker (the default) runs one batch at a time; two on a CPU, each with half the cores' threads, keep the cores
busy while the other batch is being gathered and answered (``advguard serve --workers``). A request larger than
``max_batch`` is split over consecutive batches. ``batching=False`` never mixes requests: each call holds one
request's images (at most ``max_batch`` of them). A request whose caller gave up (timeout, disconnect) before its
images ran is skipped.

Per-image answers: the Guard scores each image on its own, but the backend's kernels (oneDNN convolutions on CPU)
are chosen by batch size, so the same image can come out a float32 rounding apart in batches of different sizes
(measured on cifar10-cnn: probabilities up to 2e-7 apart between batch 1 and batch 64). ``pad=True`` pads every
call to exactly ``max_batch`` images (copies of the last one, answers discarded): every image then goes through the
same shapes and its answer is bit-for-bit independent of its batch-mates.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

R = TypeVar("R")


class QueueFullError(Exception):
    """More images are waiting than the queue holds."""


class BatcherClosedError(Exception):
    """The batcher was closed (the service is shutting down) before the request ran."""


@dataclass(eq=False)
class _Request:
    future: asyncio.Future[list[Any]]
    results: list[Any]
    remaining: int


@dataclass(eq=False)
class _Item:
    request: _Request
    index: int
    image: np.ndarray
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher(Generic[R]):
    """Gather images from concurrent :meth:`submit` calls into calls of ``fn`` (a batch -> one answer per image).

    ``on_batch(size, seconds)`` is called after every call of ``fn`` (metrics). Use inside a running event loop:
    ``await start()``, then ``submit``; ``await close()`` fails what is still waiting and stops the thread.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], Sequence[R]] | Sequence[Callable[[np.ndarray], Sequence[R]]],
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        batching: bool = True,
        pad: bool = False,
        max_queue: int = 1024,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("MicroBatcher: max_batch and max_queue must be >= 1, max_wait_s >= 0")
        #: one function per worker thread (never called from two threads at once)
        self.fns = list(fn) if isinstance(fn, Sequence) else [fn]
        if not self.fns or not all(callable(f) for f in self.fns):
            raise ValueError("MicroBatcher: fn must be a function or a non-empty list of functions (one per worker)")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.batching = batching
        self.pad = pad
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._items: deque[_Item] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._free: asyncio.Queue[int] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def workers(self) -> int:
        """How many batches can run at once (one per function)."""
        return len(self.fns)

    @property
    def queued(self) -> int:
        """Images waiting for the model (not counting the batch running now)."""
        return len(self._items)

    async def start(self) -> None:
        """Start the worker threads and the collector task (on the running loop)."""
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="advguard-guard")
        self._free = asyncio.Queue()
        for w in range(self.workers):
            self._free.put_nowait(w)
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="advguard-batcher")

    async def run_now(self, x: np.ndarray) -> list[R]:
        """Run every worker's function on ``x`` in its thread at once (the start-up warm-up), each worker taken
        from the free ones as a batch takes it (so never beside a batch of the queue); the first worker's
        answers."""
        assert self._executor is not None and self._free is not None, "MicroBatcher.start() first"
        loop = asyncio.get_running_loop()
        taken = [await self._free.get() for _ in range(self.workers)]
        try:
            out = await asyncio.gather(*(loop.run_in_executor(self._executor, self._call, w, x) for w in taken))
        finally:
            for w in taken:
                self._free.put_nowait(w)
        return out[taken.index(0)]

    async def submit(self, x: np.ndarray) -> list[R]:
        """Queue one request's images (N, C, H, W); the answers, one per image, in order."""
        if self._closed or self._wake is None:
            raise BatcherClosedError("the service is shutting down")
        n = len(x)
        if n == 0:
            return []
        if len(self._items) + n > self.max_queue:
            raise QueueFullError(f"{len(self._items)} images are waiting; the queue holds {self.max_queue}")
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        req = _Request(fut, [None] * n, n)
        now = time.monotonic()
        self._items.extend(_Item(req, i, x[i], now) for i in range(n))
        self._wake.set()
        return await fut

    async def close(self) -> None:
        """Stop collecting, fail the requests still waiting, and shut the worker thread down."""
        self._closed = True
        for task in [self._task, *self._running]:
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        _fail(self._items, BatcherClosedError("the service is shutting down"))
        self._items.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ the collector
    def _call(self, worker: int, x: np.ndarray) -> list[R]:
        n = len(x)
        if self.pad and n < self.max_batch:
            x = np.concatenate([x, np.repeat(x[-1:], self.max_batch - n, axis=0)])
        t = time.perf_counter()
        out = list(self.fns[worker](x))
        if len(out) != len(x):
            raise RuntimeError(f"the batch function answered {len(out)} results for {len(x)} images")
        if self.on_batch is not None:
            self.on_batch(len(x), time.perf_counter() - t)
        return out[:n]

    async def _wait(self, timeout: float | None) -> bool:
        """Wait for a new image (True) or ``timeout`` seconds (False)."""
        assert self._wake is not None
        self._wake.clear()
        if timeout is None:
            await self._wake.wait()
            return True
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def _take(self) -> list[_Item]:
        """The next batch: up to ``max_batch`` waiting images of the oldest one's size (of its request only,
        without batching); images of requests already answered or abandoned are dropped."""
        batch: list[_Item] = []
        first = self._items[0]
        while self._items and len(batch) < self.max_batch:
            it = self._items[0]
            if not self.batching and it.request is not first.request:
                break
            if it.image.shape != first.image.shape:  # images of another size (a model without one) wait their turn
                break
            self._items.popleft()
            if not it.request.future.done():
                batch.append(it)
        return batch

    async def _collect(self) -> None:
        assert self._free is not None
        while True:
            worker = await self._free.get()  # a batch is gathered only once a worker can take it
            try:
                while not self._items:
                    await self._wait(None)
                if self.batching:
                    deadline = self._items[0].arrived + self.max_wait_s
                    while len(self._items) < self.max_batch:
                        left = deadline - time.monotonic()
                        if left <= 0 or not await self._wait(left):
                            break
                batch = self._take()
            except BaseException:
                self._free.put_nowait(worker)
                raise
            if not batch:
                self._free.put_nowait(worker)
                continue
            task = asyncio.get_running_loop().create_task(self._run(worker, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, worker: int, batch: list[_Item]) -> None:
        """One batch in ``worker``'s thread; its answers (or its error) to each request."""
        assert self._executor is not None and self._free is not None
        try:
            x = np.stack([it.image for it in batch])
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._call, worker, x)
        except asyncio.CancelledError:
            _fail(batch, BatcherClosedError("the service is shutting down"))
            raise
        except Exception as e:  # the batch failed: every request in it gets the error (logged by the app)
            _fail(batch, e)
            return
        finally:
            self._free.put_nowait(worker)
        for it, r in zip(batch, results, strict=True):
            req = it.request
            if req.future.done():
                continue
            req.results[it.index] = r
            req.remaining -= 1
            if req.remaining == 0:
                req.future.set_result(req.results)


def _fail(items: Iterable[_Item], error: BaseException) -> None:
    """Fail the requests of ``items`` that are still waiting with ``error``."""
    for it in items:
        if not it.request.future.done():
            it.request.future.set_exception(error)
