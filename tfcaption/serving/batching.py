"""Dynamic batching: concurrent requests to one signature merged into one model call, then split back.

A `Batcher` serves one signature of one loaded version. Requests are queued (an asyncio queue bounded in
images: a full queue refuses with UNAVAILABLE, HTTP 503, instead of growing without bound). A batch starts
with the oldest request and takes the queued requests whose inputs can be concatenated with it (same dtype
and per-example shape), oldest first, until `max_batch` examples or until `timeout_s` has passed since the
oldest one arrived, as TF Serving's batch scheduler does (`max_batch_size`, `batch_timeout_micros`). A
request larger than `max_batch` is one call of its own. The call runs in a worker thread (TensorFlow
releases the GIL), so the next batch fills while one runs; `workers` calls may run at once.

Only requests that can share a call are merged: one batcher per signature, and inputs of one dtype and
per-example shape. The sampling signature (`sample`) takes its settings (temperature, top_k, top_p, seed,
max_length) as per-row inputs and draws each row from its own seed, so sampling requests with different
settings are merged like any others and each row's caption is the one a call of its own would give.

Every output is split back along the batch dimension. One bad example fails only its own request: when a
merged call fails with INVALID_ARGUMENT, the requests that its message blames (tfcaption's image decoder
names every bad element, `image_bytes[3]: ...`; the sampling signature every bad setting, `top_p[3]: ...`)
are called on their own, so each gets exactly the error a call of its own would give, and the others are
called merged again; if the message names no element, or the second merged call fails too, every request
is called on its own. A signature whose outputs are not
all batch-major is called once per request.

With `merge=False` every request is one call of its own (what a server without batching does), still
bounded by the queue and run on the worker threads.
"""

import asyncio
import collections
import dataclasses
import re
import threading

import numpy as np

from tfcaption.serving.rest import ServingError, error_from_tensorflow


@dataclasses.dataclass
class _Task:
    inputs: dict
    size: int
    key: tuple
    arrived: float
    future: asyncio.Future
    cancelled: bool = False


@dataclasses.dataclass
class BatchStats:
    """Counters of one batcher (the server reports them at /tfcaption/stats)."""

    requests: int = 0
    calls: int = 0
    images: int = 0
    merged_calls: int = 0
    largest_call: int = 0
    fallbacks: int = 0
    rejected_queue_full: int = 0
    abandoned: int = 0
    batch_sizes: dict = dataclasses.field(default_factory=dict)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def count_call(self, images, requests):
        with self._lock:
            self._count(images, requests)

    def _count(self, images, requests):
        self.calls += 1
        self.images += images
        self.largest_call = max(self.largest_call, images)
        self.batch_sizes[images] = self.batch_sizes.get(images, 0) + 1
        if requests > 1:
            self.merged_calls += 1

    def json(self):
        with self._lock:
            out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}
            out["batch_sizes"] = {str(k): v for k, v in sorted(self.batch_sizes.items())}
        return out


def _merge_key(inputs):
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in sorted(inputs.items()))


class Batcher:
    """Dynamic batching for one signature.

    Args:
        call: `inputs (name -> numpy array, batch-major) -> outputs (name -> numpy array)`, run in a worker
            thread; raises ServingError or whatever the model call raises.
        executor: the `concurrent.futures` executor whose threads run `call`.
        max_batch: most examples merged into one call.
        timeout_s: longest wait, from the oldest queued request's arrival, for a batch to fill.
        max_queue: most examples waiting (not yet in a running call); beyond it `submit` raises
            ServingError UNAVAILABLE (HTTP 503).
        workers: calls of this batcher that may run at once.
        merge: False: one call per request, no waiting.
    """

    def __init__(self, call, executor, max_batch=32, timeout_s=0.005, max_queue=512, workers=1, merge=True):
        if max_batch < 1 or max_queue < 1 or workers < 1:
            raise ValueError("max_batch, max_queue and workers must be >= 1")
        self.call = call
        self.executor = executor
        self.max_batch = int(max_batch)
        self.timeout_s = float(timeout_s)
        self.max_queue = int(max_queue)
        self.workers = int(workers)
        self.merge = bool(merge)
        self.stats = BatchStats()
        self._queue = collections.deque()
        self._queued = 0
        self._running = 0
        self._event = None
        self._slots = None
        self._loop_task = None
        self._idle = None

    # ------------------------------------------------------------------ lifecycle (event loop)
    def start(self):
        """Starts the batching loop on the running event loop."""
        self._event = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._slots = asyncio.Semaphore(self.workers)
        self._loop_task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def drain(self):
        """Waits until nothing is queued or running."""
        while self._queue or self._running:
            self._idle.clear()
            await self._idle.wait()

    async def close(self):
        """Finishes what is queued and running, then stops the loop."""
        await self.drain()
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
            self._loop_task = None

    @property
    def queued(self):
        return self._queued

    # ------------------------------------------------------------------ requests (event loop)
    async def submit(self, inputs, size):
        """Queues one request's inputs (`size` examples); returns its outputs or raises ServingError.

        Cancelling the awaiting coroutine (a per-request timeout, a closed connection) takes the request
        out of the queue if it has not started.
        """
        if self._loop_task is None:
            raise ServingError("the model is being unloaded", "UNAVAILABLE")
        if self._queued + size > self.max_queue:
            self.stats.rejected_queue_full += 1
            raise ServingError(f"The batch scheduling queue to which this task was submitted is full "
                               f"({self._queued} examples waiting, limit {self.max_queue}); retry later",
                               "UNAVAILABLE")
        loop = asyncio.get_running_loop()
        task = _Task(inputs, int(size), _merge_key(inputs), loop.time(), loop.create_future())
        self._queue.append(task)
        self._queued += task.size
        self.stats.requests += 1
        self._event.set()
        try:
            return await task.future
        except asyncio.CancelledError:
            task.cancelled = True
            self.stats.abandoned += 1
            if task in self._queue:
                self._queue.remove(task)
                self._queued -= task.size
                self._notify_idle()
            raise

    def _notify_idle(self):
        if not self._queue and not self._running:
            self._idle.set()

    # ------------------------------------------------------------------ the loop (event loop)
    def _matching(self, first):
        return sum(t.size for t in self._queue if t.key == first.key)

    async def _next_batch(self):
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._event.clear()
                await self._event.wait()
                continue
            first = self._queue[0]
            if self.merge:
                deadline = first.arrived + self.timeout_s
                while self._queue and self._queue[0] is first and self._matching(first) < self.max_batch:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    self._event.clear()
                    try:
                        await asyncio.wait_for(self._event.wait(), left)
                    except asyncio.TimeoutError:
                        break
                if not self._queue or self._queue[0] is not first:
                    continue  # the oldest request left (cancelled): start again from the new oldest
            return self._take(first)

    def _take(self, first):
        batch, kept, total = [], collections.deque(), 0
        for task in self._queue:
            fits = task is first or (self.merge and task.key == first.key and total + task.size <= self.max_batch)
            if fits and not (batch and total >= self.max_batch):
                batch.append(task)
                total += task.size
            else:
                kept.append(task)
        self._queue = kept
        self._queued -= total
        return batch

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                tasks = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            self._running += 1
            future = loop.run_in_executor(self.executor, self._execute, tasks)
            future.add_done_callback(lambda f, tasks=tasks: self._finish(tasks, f))

    def _finish(self, tasks, future):
        self._running -= 1
        self._slots.release()
        try:
            results = future.result()
        except BaseException as error:  # noqa: BLE001 - the worker itself failed
            results = [error_from_tensorflow(error)] * len(tasks)
        for task, result in zip(tasks, results):
            if task.future.done():
                continue
            if isinstance(result, BaseException):
                task.future.set_exception(result)
            else:
                task.future.set_result(result)
        self._notify_idle()

    # ------------------------------------------------------------------ calls (worker thread)
    def _call(self, inputs, requests):
        size = next(iter(inputs.values())).shape[0]
        self.stats.count_call(int(size), requests)
        try:
            return self.call(inputs)
        except ServingError as error:
            return error
        except Exception as error:  # noqa: BLE001 - becomes the request's error body
            return error_from_tensorflow(error)

    def _one(self, task):
        return self._call(task.inputs, 1)

    def _execute(self, tasks):
        """Results (outputs dict or ServingError) for `tasks`, in order."""
        tasks = [t for t in tasks if not t.cancelled] or tasks[:1]
        if len(tasks) == 1:
            return [self._one(tasks[0])]
        results = self._merged(tasks)
        if results is not None:
            return results
        return [self._one(t) for t in tasks]

    def _merged(self, tasks, isolate=True):
        """One call for all `tasks`, split back; None when they must be called one by one."""
        names = list(tasks[0].inputs)
        merged = {name: np.concatenate([t.inputs[name] for t in tasks]) for name in names}
        total = sum(t.size for t in tasks)
        outputs = self._call(merged, len(tasks))
        if isinstance(outputs, ServingError):
            if outputs.code != "INVALID_ARGUMENT":
                return [outputs] * len(tasks)
            self.stats.fallbacks += 1
            blamed = self._blamed(outputs.message, names, tasks) if isolate else set()
            if not blamed or len(blamed) == len(tasks):
                return None
            results = [None] * len(tasks)
            for i in blamed:
                results[i] = self._one(tasks[i])
            rest = [i for i in range(len(tasks)) if i not in blamed]
            again = (self._merged([tasks[i] for i in rest], isolate=False) if len(rest) > 1 else None) or \
                [self._one(tasks[i]) for i in rest]
            for i, result in zip(rest, again):
                results[i] = result
            return results
        if any(np.ndim(v) == 0 or np.shape(v)[0] != total for v in outputs.values()):
            return None  # not batch-major: the caller calls each request on its own
        results, start = [], 0
        for task in tasks:
            results.append({name: value[start:start + task.size] for name, value in outputs.items()})
            start += task.size
        return results

    @staticmethod
    def _blamed(message, names, tasks):
        """Positions in `tasks` of the requests owning the elements an error message names (`name[i]`)."""
        indices = set()
        for name in names:
            indices.update(int(i) for i in re.findall(rf"(?<![\w]){re.escape(name)}\[(\d+)\]", message))
        blamed, start = set(), 0
        for position, task in enumerate(tasks):
            if any(start <= i < start + task.size for i in indices):
                blamed.add(position)
            start += task.size
        return blamed
