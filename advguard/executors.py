"""Where the experiments' chunked work runs: in this process (``local``, the default) or as Ray tasks (``ray``).

The expensive steps of an experiment are already cut into independent chunks, each cached in its own file
(adversarial-set chunks, detector-feature chunks, RP2 targets, leave-one-out batches). :func:`cached_map` is
the one entry point: it reads every chunk whose file is intact and hands the others to the current
:class:`ChunkExecutor` as :class:`ChunkTask` descriptions (index, cache path, inputs). Whoever computes a chunk
writes it atomically with its checksum (:func:`advguard.data.cache.save_entry`) and returns it as read back from
the file, so a run interrupted anywhere resumes with the chunks that were finished, on either executor.

* :class:`LocalExecutor` computes the chunks one after the other in this process (today's behaviour).
* :class:`RayExecutor` submits one Ray task per chunk (``pip install advguard[ray]``). The chunk function is
  pickled once per call (cloudpickle) with the classifier replaced by a reference; the classifier itself is put in
  Ray's object store once and loaded once per worker process (a cached loader), never shipped with each task.
  Tasks request one CPU, and one GPU when the classifier is on CUDA. A task whose worker dies (killed, out of
  memory) is retried by Ray (``max_retries``); only that chunk is recomputed.

Results do not depend on the executor: a chunk's output depends on its inputs and the configured seed only (the
attacks re-seed at every call, the detectors draw per-image randomness seeded by the image's bytes), never on
which process computed it or in which order.

:func:`use_executor` sets the executor of a block (``advguard reproduce --executor ray`` wraps the run in it);
:func:`current_executor` is what :func:`cached_map` uses.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import importlib
import io
import itertools
import os
import pickle
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np
from tqdm.auto import tqdm

from .data.cache import cache_lock, load_entry, save_entry
from .errors import ExecutorError

if TYPE_CHECKING:  # pragma: no cover
    from .classifier import Classifier

__all__ = [
    "EXECUTORS",
    "ChunkExecutor",
    "ChunkRecord",
    "ChunkTask",
    "LocalExecutor",
    "RayExecutor",
    "cached_map",
    "current_executor",
    "make_executor",
    "use_executor",
]

#: the executors ``advguard reproduce --executor`` accepts
EXECUTORS = ("local", "ray")

#: a chunk's result: the arrays written to (and read back from) its cache file
Arrays = dict[str, np.ndarray]
T = TypeVar("T")

RAY_MISSING = "the ray executor needs Ray: pip install advguard[ray] (or pip install 'ray>=2.9')"


@dataclass(frozen=True)
class ChunkTask(Generic[T]):
    """One chunk of work: its index in the whole, the cache file its result goes to, and its inputs."""

    index: int
    path: Path
    item: T


@dataclass(frozen=True)
class ChunkRecord:
    """Who computed a chunk and how long it took (``seconds``: the chunk function and its cache write)."""

    desc: str
    index: int
    pid: int
    host: str
    seconds: float


class ChunkExecutor(Protocol):
    """Runs a pure chunk function over chunk tasks; each result is written to its task's cache path."""

    name: str
    #: every chunk this executor computed, in completion order
    records: list[ChunkRecord]

    def map_chunks(
        self,
        fn: Callable[[T], Arrays],
        tasks: Sequence[ChunkTask[T]],
        *,
        classifier: Classifier | None = None,
        desc: str = "",
        progress: bool = True,
    ) -> list[Arrays]:
        """``fn(task.item)`` for every task, saved at ``task.path`` and returned as read back, in task order.
        ``classifier``: the model ``fn`` uses (loaded once per worker, not shipped with each task)."""
        ...

    def close(self) -> None:
        """Release what the executor started (a local Ray cluster); idempotent."""
        ...


def compute_chunk(fn: Callable[[T], Arrays], task: ChunkTask[T], desc: str = "") -> tuple[Arrays, ChunkRecord]:
    """``fn(task.item)`` written atomically with its checksum to ``task.path``, returned as read back (exactly what
    a resumed run would load), with the record of who computed it. Under the chunk's lock, and only if the chunk
    is not there yet: two runs on one cache (or a retried task whose first attempt got as far as writing) compute
    it once."""
    t0 = time.perf_counter()
    with cache_lock(task.path):
        back = load_entry(task.path)
        if back is None:
            save_entry(task.path, fn(task.item))
            back = load_entry(task.path)
    if back is None:  # pragma: no cover - the file just written and verified vanished or changed
        raise OSError(f"chunk {task.path} could not be read back after writing it")
    return back, ChunkRecord(desc, task.index, os.getpid(), socket.gethostname(), time.perf_counter() - t0)


@dataclass
class LocalExecutor:
    """The chunks one after the other in this process (the default; what advguard always did)."""

    name: str = "local"
    records: list[ChunkRecord] = field(default_factory=list)

    def map_chunks(
        self,
        fn: Callable[[T], Arrays],
        tasks: Sequence[ChunkTask[T]],
        *,
        classifier: Classifier | None = None,
        desc: str = "",
        progress: bool = True,
    ) -> list[Arrays]:
        out = []
        for task in tqdm(tasks, desc=desc, leave=False, disable=not progress or not tasks):
            arrays, record = compute_chunk(fn, task, desc)
            self.records.append(record)
            out.append(arrays)
        return out

    def close(self) -> None:
        """Nothing to release."""


_CURRENT: contextvars.ContextVar[ChunkExecutor | None] = contextvars.ContextVar("advguard_executor", default=None)


def current_executor() -> ChunkExecutor:
    """The executor of the enclosing :func:`use_executor` block; a local one outside any."""
    return _CURRENT.get() or LocalExecutor()


@contextlib.contextmanager
def use_executor(executor: ChunkExecutor | None) -> Iterator[ChunkExecutor]:
    """Run the chunked work of the block on ``executor`` (None: the local one)."""
    token = _CURRENT.set(executor)
    try:
        yield current_executor()
    finally:
        _CURRENT.reset(token)


def cached_map(
    fn: Callable[[T], Arrays],
    paths: Sequence[Path],
    item: Callable[[int], T],
    *,
    classifier: Classifier | None = None,
    desc: str = "",
    progress: bool = True,
    executor: ChunkExecutor | None = None,
) -> list[Arrays]:
    """``fn(item(i))`` for every chunk ``i``, each cached at ``paths[i]``: a chunk whose file is intact is read and
    not recomputed; the others run on ``executor`` (default: :func:`current_executor`), which writes each one
    atomically with its checksum. ``fn`` must be pure: its result may depend on ``item(i)`` and what ``fn`` closes
    over, never on state left by other chunks. ``item(i)`` is built only for chunks still to compute."""
    out: list[Arrays | None] = [load_entry(p) for p in paths]  # finished chunks (a corrupt one is moved aside)
    todo = [ChunkTask(i, Path(paths[i]).absolute(), item(i)) for i, a in enumerate(out) if a is None]
    if todo:
        ex = executor or current_executor()
        for task, arrays in zip(
            todo, ex.map_chunks(fn, todo, classifier=classifier, desc=desc, progress=progress), strict=True
        ):
            out[task.index] = arrays
    return [a for a in out if a is not None]


# ------------------------------------------------------------------------------------------------------ Ray


def import_ray() -> Any:
    """The ``ray`` module, or an :class:`~advguard.errors.ExecutorError` saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError as e:
        raise ExecutorError(f"{RAY_MISSING} ({e})") from None


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Refuse a Ray address that is not ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``, or whose port does not
    answer within ``timeout`` seconds (``ray.init`` would retry for minutes)."""
    if address is None or address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ExecutorError(f"--address must be auto, HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ExecutorError(
            f"no Ray cluster answers at {address} ({e}); start one with `ray start --head` there, or give no address "
            "(neither --address nor $RAY_ADDRESS) to start a local cluster"
        ) from None


class _RefUnpickler(pickle.Unpickler):
    """Unpickles what :func:`dumps_chunk_fn` wrote, each reference resolved by ``resolve``."""

    def __init__(self, data: bytes, resolve: Callable[[tuple[str, str]], Any]) -> None:
        super().__init__(io.BytesIO(data))
        self._resolve = resolve

    def persistent_load(self, pid: Any) -> Any:
        return self._resolve(tuple(pid))


def _references(clf: Classifier) -> dict[tuple[str, str], Any]:
    """The objects of ``clf`` a chunk function may hold, by reference name."""
    refs: dict[tuple[str, str], Any] = {("classifier", ""): clf}
    refs.update({("module", n): m for n, m in clf.module.named_modules()})
    refs.update({("parameter", n): p for n, p in clf.module.named_parameters()})
    refs.update({("buffer", n): b for n, b in clf.module.named_buffers()})
    return refs


def dumps_chunk_fn(fn: Callable[..., Any], clf: Classifier | None) -> bytes:
    """``fn`` pickled by value (cloudpickle) with every reference to ``clf`` (and its modules, parameters and
    buffers) left out as a reference."""
    cloudpickle = importlib.import_module("ray.cloudpickle")
    refs = {id(o): k for k, o in _references(clf).items()} if clf is not None else {}

    def persistent_id(_self: object, obj: object) -> tuple[str, str] | None:
        return refs.get(id(obj))

    # cloudpickle's pickler (functions and closures by value) with the classifier's objects left out as references
    pickler = type("RefPickler", (cloudpickle.CloudPickler,), {"persistent_id": persistent_id})
    buf = io.BytesIO()
    pickler(buf, protocol=5).dump(fn)
    return buf.getvalue()


def loads_chunk_fn(data: bytes, clf: Classifier | None) -> Callable[..., Any]:
    """The inverse of :func:`dumps_chunk_fn`, the references resolved to ``clf``."""
    refs = _references(clf) if clf is not None else {}

    def resolve(pid: tuple[str, str]) -> Any:
        if pid not in refs:
            raise ExecutorError(f"the chunk function refers to {pid} of a classifier this worker was not given")
        return refs[pid]

    fn: Callable[..., Any] = _RefUnpickler(data, resolve).load()
    return fn


#: classifier settings a chunk function may depend on that the driver can change after shipping the model
_STATE = ("inference", "batch_size", "bounds")
#: the worker's loaded classifiers, by the driver's key (most recent last; a few at most)
_WORKER_MODELS: OrderedDict[str, Classifier] = OrderedDict()
_WORKER_MODELS_MAX = 4


def _move(clf: Classifier, device: str) -> Classifier:
    import torch

    from .devices import indexed

    clf.device = torch.device(device)
    clf.module.to(clf.device)
    clf.device = indexed(clf.device)  # as the Classifier names it: "cuda:0"
    return clf


def _worker_classifier(spec: list[Any]) -> Classifier:
    """The classifier ``spec`` = [key, [object ref], state, device type] names, loaded once per worker process."""
    key, (ref,), state, device_type = spec
    clf = _WORKER_MODELS.get(key)
    if clf is None:
        ray = import_ray()
        clf = pickle.loads(ray.get(ref))
        if device_type == "cuda":  # shipped on the CPU; the task's GPU is the worker's "cuda"
            _move(clf, "cuda")
        _WORKER_MODELS[key] = clf
        while len(_WORKER_MODELS) > _WORKER_MODELS_MAX:
            _WORKER_MODELS.popitem(last=False)
    _WORKER_MODELS.move_to_end(key)
    for k, v in state.items():
        setattr(clf, k, tuple(v) if isinstance(v, list) else v)
    return clf


def _writable(obj: Any) -> Any:
    """``obj`` with its read-only numpy arrays (Ray's zero-copy arguments) copied; tuples, lists and dicts walked."""
    if isinstance(obj, np.ndarray):
        return obj if obj.flags.writeable else obj.copy()
    if isinstance(obj, (tuple, list)):
        return type(obj)(_writable(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _writable(v) for k, v in obj.items()}
    return obj


def _ray_chunk(
    payload: bytes, model: list[Any], task: ChunkTask[Any], desc: str, threads: int
) -> tuple[Arrays, ChunkRecord]:
    """A Ray task: resolve the classifier (cached per worker), rebuild the chunk function, compute the chunk (on
    writable copies of its inputs, as in a local run) with ``threads`` torch threads (the task's CPUs)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    clf = _worker_classifier(model[0]) if model else None
    item = ChunkTask(task.index, task.path, _writable(task.item))
    return compute_chunk(loads_chunk_fn(payload, clf), item, desc)


class RayExecutor:
    """One Ray task per chunk, on a Ray cluster: the one at ``address`` (``"auto"``: the running one this machine
    knows, ``"HOST:PORT"``: a head node's GCS address; default ``$RAY_ADDRESS``), or a local cluster with
    ``num_cpus`` CPUs (default: all of this machine's) started here and shut down by :meth:`close`. A Ray session
    already open in this process is used as it is. Each task takes ``cpus_per_task`` CPUs (torch in it uses as
    many threads), one GPU when the classifier is on CUDA; a task whose worker dies is retried up to
    ``max_retries`` times."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        cpus_per_task: int = 1,
        max_retries: int = 3,
    ) -> None:
        self.ray = import_ray()
        self.records: list[ChunkRecord] = []
        self.cpus_per_task = int(cpus_per_task)
        self.max_retries = int(max_retries)
        self._models: dict[int, tuple[Classifier, str, Any]] = {}
        self._owns = False
        # Ray's own convention: $RAY_ADDRESS names the cluster when no address is given
        address = address or os.environ.get("RAY_ADDRESS") or None
        check_address(address)  # even with a session open here: a wrong address is named, never ignored
        if not self.ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "warning"}
            if address is None:
                kwargs["num_cpus"] = int(num_cpus or os.cpu_count() or 1)
            try:
                self.ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ExecutorError(f"could not start or reach a Ray cluster (address={address!r}): {e}") from None
            self._owns = True  # shut down (a local cluster) or disconnected (a remote one) by close()
        self._remote = self.ray.remote(_ray_chunk)

    def describe(self) -> str:
        """One line: the cluster's nodes, CPUs and GPUs (what the CLI prints before a run)."""
        res = self.ray.cluster_resources()
        nodes = sum(1 for n in self.ray.nodes() if n.get("Alive"))
        return f"Ray cluster: {nodes} node(s), {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs"

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Shut down the local cluster this executor started, or disconnect from the one it connected to (which
        keeps running); a session that was open before is left open."""
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns = False
        self._models.clear()

    def _model_spec(self, clf: Classifier) -> list[Any]:
        """[key, [object ref], state, device type] of ``clf``: put in the object store once (a CPU copy when it is on
        a GPU, so that each worker puts it on the GPU Ray gives it)."""
        known = self._models.get(id(clf))
        if known is None or known[0] is not clf:
            shipped = clf
            if clf.device.type != "cpu":
                shipped = _move(copy.deepcopy(clf), "cpu")
            cloudpickle = importlib.import_module("ray.cloudpickle")
            ref = self.ray.put(cloudpickle.dumps(shipped, protocol=5))
            known = (clf, uuid.uuid4().hex, ref)
            self._models[id(clf)] = known
        state = {k: getattr(clf, k) for k in _STATE}
        return [known[1], [known[2]], state, clf.device.type]

    def task_options(self, classifier: Classifier | None) -> dict[str, Any]:
        """The Ray options of each chunk task: CPUs, one GPU when ``classifier`` is on CUDA, retries."""
        on_cuda = classifier is not None and classifier.device.type == "cuda"
        return {
            "num_cpus": self.cpus_per_task,
            "num_gpus": 1 if on_cuda else 0,
            "max_retries": self.max_retries,
            "retry_exceptions": False,  # an error in the chunk function is not retried; a dead worker is
        }

    def map_chunks(
        self,
        fn: Callable[[T], Arrays],
        tasks: Sequence[ChunkTask[T]],
        *,
        classifier: Classifier | None = None,
        desc: str = "",
        progress: bool = True,
    ) -> list[Arrays]:
        if not tasks:
            return []
        ray = self.ray
        opts = self.task_options(classifier)
        resources = ray.cluster_resources()
        if opts["num_gpus"] and resources.get("GPU", 0) < opts["num_gpus"]:
            raise ExecutorError(
                "the classifier runs on CUDA but the Ray cluster has no GPU (its tasks would wait forever): start "
                "GPU workers with `ray start --num-gpus=1 ...`, or run with device = cpu"
            )
        payload = ray.put(dumps_chunk_fn(fn, classifier))
        model = [self._model_spec(classifier)] if classifier is not None else []
        label = desc or "chunk"
        todo = iter(enumerate(tasks))
        pending: dict[Any, int] = {}  # in flight: object ref -> slot in `out`
        slots = self._slots(opts, resources)  # read once per map: no cluster query per chunk

        def submit() -> None:
            """Top up the tasks in flight to ``slots``. The task's name is its worker's process title while it
            runs: ray::advguard-chunk:DESC:INDEX."""
            for i, t in itertools.islice(todo, max(0, slots - len(pending))):
                ref = self._remote.options(**opts, name=f"advguard-chunk:{label}:{t.index}").remote(
                    payload, model, t, desc, self.cpus_per_task
                )
                pending[ref] = i

        out: list[Arrays | None] = [None] * len(tasks)
        bar = tqdm(total=len(tasks), desc=desc, leave=False, disable=not progress)
        try:
            submit()
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    arrays, record = ray.get(ref)
                    # copies: what ray.get returns is read-only and pins the object store
                    out[pending.pop(ref)] = {k: np.array(v) for k, v in arrays.items()}
                    self.records.append(record)
                    bar.update(1)
                submit()
        finally:
            bar.close()
        return [a for a in out if a is not None]

    @staticmethod
    def _slots(opts: dict[str, Any], resources: dict[str, float]) -> int:
        """How many chunk tasks run at once on the cluster (its CPUs or GPUs over each task's share; at least 1):
        :meth:`map_chunks` keeps that many in flight and submits the next one as one finishes.

        Why not submit them all and ``ray.cancel`` the rest when one fails (as 0.2.0 did)? Cancelling a
        task whose reply is arriving races in Ray's core worker and aborts this process with exit status 1
        (``Check failed: it != submissible_tasks_.end() Tried to complete task that was not pending``;
        ray-project/ray#54846, PR #54798 fixed the retry variant): 3 aborts in 3 runs of 20 failing maps on a
        local cluster with ray 2.60.0, and a CI run killed after the Ray tests. With a window nothing is ever
        cancelled: after an error (or Ctrl-C) no new chunk starts and the few in flight finish into the cache."""
        if opts["num_gpus"]:
            return max(1, int(resources.get("GPU", 0) // opts["num_gpus"]))
        return max(1, int(resources.get("CPU", 1) // max(opts["num_cpus"], 1)))


def make_executor(name: str, address: str | None = None, **kwargs: Any) -> ChunkExecutor:
    """The executor called ``name`` (one of :data:`EXECUTORS`); ``address`` only for ``ray``."""
    if name == "local":
        if address is not None:
            raise ExecutorError("--address is for --executor ray; the local executor runs in this process")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, **kwargs)
    raise ExecutorError(f"unknown executor {name!r}; known: {', '.join(EXECUTORS)}")
