"""Beyond one machine: map a prompt over a Dask DataFrame or Bag (``pip install 'flotorch_nb[dask]'``).

``map_dataframe(ddf, template=..., model=...)`` returns a lazy Dask DataFrame with the
``BatchResult.to_pandas()`` columns appended (answer, tokens, latency, source, error_type, error...);
``map_bag(bag, ...)`` a Bag of one dict per prompt. Each partition is one ``llm.batch`` run.

What crosses the wire is configuration, never a secret or a live client (clients do not pickle):

- The task graph holds ``ClientConfig`` (model, base URL, endpoint, timeout, retries) and the batch
  options, not the API key. Each worker process reads ``FLOTORCH_API_KEY`` from its own environment
  and builds **one** pooled ``FlotorchLLM`` per configuration, reused by all its partitions (on the
  process's batch loop, so connections are reused too). To give workers the key: start them with the
  variable set (``FLOTORCH_API_KEY=... dask worker tcp://scheduler:8786``, or your cluster manager's
  environment settings); ``LocalCluster`` workers inherit it from the process that starts them. A
  ``distributed.diagnostics.plugin.Environ({"FLOTORCH_API_KEY": ...})`` nanny plugin also works,
  but it passes the key through the scheduler.
- ``rpm``/``tpm`` hold for the whole cluster: every request of the job asks one ``RateLimiter``
  kept on the scheduler (a scheduler plugin registered on first use), so adding workers never adds
  rate. A 429 pauses every worker of the job.
- ``cache=PATH`` is the answer cache (SQLite WAL): workers on one machine share the file, so a
  partition re-run after a worker died sends only what had not been answered.
- Per-item errors are kept as rows (``error_type``, ``error``), as in a local batch.

``local_cluster()`` starts the embedded default, ``distributed.LocalCluster(processes=True)``, and a
client for it; code that outgrows one machine passes a real scheduler's address to
``distributed.Client`` instead and runs unchanged.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._admission import Asked, Spent, Ticket
from .batch import COLUMNS, BatchOptions, Grant, Inputs, RateLimiter, run_sync, template_fields
from .batch._inputs import ITEM
from .batch._limits import PauseFor, check_limit, pause_after
from .batch._result import row_values

if TYPE_CHECKING:
    import dask.bag
    import dask.dataframe
    import pandas

    from .llm import FlotorchLLM

try:
    from distributed.diagnostics.plugin import SchedulerPlugin
except ImportError:  # pragma: no cover - the extra is not installed
    SchedulerPlugin = object  # type: ignore[assignment,misc]

__all__ = ["ClientConfig", "local_cluster", "map_bag", "map_dataframe", "worker_client"]

PLUGIN_NAME = "flotorch-rate"


@dataclass(frozen=True)
class ClientConfig:
    """How a worker builds its client: everything but the key (read from the worker's environment)."""

    model_id: str | None = None
    base_url: str | None = None
    endpoint: str | None = None
    timeout: float | None = None
    max_retries: int | None = None


@dataclass(frozen=True)
class _Job:
    config: ClientConfig
    template: str | None
    options: dict[str, Any] = field(default_factory=dict)
    limiter: str | None = None
    rpm: float | None = None
    tpm: float | None = None


# -- one client per worker process ------------------------------------------------------------------
_CLIENTS: dict[tuple[int, ClientConfig], FlotorchLLM] = {}
_CLIENTS_LOCK = threading.Lock()
#: How many clients this process built (tests check that it is one per configuration).
built = 0


def worker_client(config: ClientConfig) -> FlotorchLLM:
    """This process's client for ``config`` (built on first use; the key from ``FLOTORCH_API_KEY``)."""
    global built
    from .llm import FlotorchLLM

    with _CLIENTS_LOCK:
        client = _CLIENTS.get((os.getpid(), config))
        if client is None:
            client = FlotorchLLM(
                config.model_id,
                None,
                config.base_url,
                endpoint=config.endpoint,
                timeout=config.timeout,
                max_retries=config.max_retries,
            )
            _CLIENTS[(os.getpid(), config)] = client
            built += 1
        return client


# -- one rate limit per job, on the scheduler ---------------------------------------------------------
class RatePlugin(SchedulerPlugin):
    """Scheduler plugin: one ``RateLimiter`` per job name, which every worker's requests ask."""

    idempotent = True
    name = PLUGIN_NAME

    def __init__(self) -> None:
        self.limiters: dict[str, RateLimiter] = {}
        self.grants: dict[tuple[str, int], Grant] = {}

    async def start(self, scheduler: Any) -> None:
        """Install the handlers the workers call."""
        scheduler.handlers.update(
            {
                "flotorch_rate_try": self.try_acquire,
                "flotorch_rate_settle": self.settle,
                "flotorch_rate_pause": self.pause,
            }
        )

    def try_acquire(self, name: str, rpm: float | None, tpm: float | None, tokens: int) -> int | float:
        """A grant id (an int) for a request of ``tokens`` now, or the seconds to wait (a float)."""
        limiter = self.limiters.get(name)
        if limiter is None:
            limiter = self.limiters[name] = RateLimiter(rpm, tpm)
        grant = limiter.try_acquire(tokens)
        if not isinstance(grant, Grant):
            return float(grant)
        if tpm is not None:
            self.grants[(name, grant.id)] = grant
        return grant.id

    def settle(self, name: str, grant: int, tokens: int) -> None:
        """A request of the job used ``tokens``."""
        found, limiter = self.grants.pop((name, grant), None), self.limiters.get(name)
        if found is not None and limiter is not None:
            limiter.settle(found, tokens)

    def pause(self, name: str, seconds: float) -> None:
        """A 429: hold the whole job back."""
        limiter = self.limiters.get(name)
        if limiter is not None:
            limiter.pause(seconds)


class _ClusterLimiter:
    """The worker's side of ``RatePlugin``: each call is an RPC to the scheduler on the worker's loop."""

    def __init__(self, worker: Any, name: str, rpm: float | None, tpm: float | None) -> None:
        self._worker, self._name, self._rpm, self._tpm = worker, name, rpm, tpm

    def _call(self, op: str, **kwargs: Any) -> Any:
        method = getattr(self._worker.scheduler, op)
        return asyncio.run_coroutine_threadsafe(
            method(name=self._name, **kwargs), self._worker.loop.asyncio_loop
        )

    def gate(self, pause_for: PauseFor) -> _ClusterGate:
        return _ClusterGate(self, pause_for)


class _ClusterGate:
    """The cluster's limit as a gate of the send loop: asked over RPC, never blocking either loop."""

    def __init__(self, limiter: _ClusterLimiter, pause_for: PauseFor) -> None:
        self._limiter, self._pause_for = limiter, pause_for

    def _answer(self, answer: int | float, tokens: int) -> Ticket | float:
        if isinstance(answer, float):
            return answer  # seconds to wait before asking again
        return Grant(time.monotonic(), tokens, int(answer))

    async def aadmit(self, request: Asked) -> Ticket | float:
        limiter, tokens = self._limiter, request.estimated_tokens
        future = limiter._call("flotorch_rate_try", rpm=limiter._rpm, tpm=limiter._tpm, tokens=tokens)
        return self._answer(await asyncio.wrap_future(future), tokens)

    def admit(self, request: Asked) -> Ticket | float:
        """For a sync caller in a thread of its own (a batch's items are asked with ``aadmit``)."""
        limiter, tokens = self._limiter, request.estimated_tokens
        future = limiter._call("flotorch_rate_try", rpm=limiter._rpm, tpm=limiter._tpm, tokens=tokens)
        return self._answer(future.result(), tokens)

    def settle(self, ticket: Ticket, spent: Spent | None) -> None:
        assert isinstance(ticket, Grant)
        limiter = self._limiter
        if (seconds := pause_after(spent, self._pause_for)) is not None:
            limiter._call("flotorch_rate_pause", seconds=seconds)
        if limiter._tpm is not None:
            limiter._call("flotorch_rate_settle", grant=ticket.id, tokens=spent.tokens if spent else 0)


_PLUGIN_READY: set[int] = set()
_LOCAL_LIMITERS: dict[str, RateLimiter] = {}


def _limiter(job: _Job) -> Any:
    if job.limiter is None:
        return None
    try:
        from distributed import get_client, get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not on a distributed worker: this process is the cluster
        with _CLIENTS_LOCK:
            return _LOCAL_LIMITERS.setdefault(job.limiter, RateLimiter(job.rpm, job.tpm))
    if os.getpid() not in _PLUGIN_READY:
        get_client().register_plugin(RatePlugin(), name=PLUGIN_NAME)  # idempotent: the first one stays
        _PLUGIN_READY.add(os.getpid())
    return _ClusterLimiter(worker, job.limiter, job.rpm, job.tpm)


# -- partitions --------------------------------------------------------------------------------------
def _run(job: _Job, inputs: Any) -> Any:
    llm = worker_client(job.config)
    options = BatchOptions.of(template=job.template, progress=False, limiter=_limiter(job), **job.options)
    return run_sync(llm, inputs, options)


def _dataframe_partition(frame: pandas.DataFrame, job: _Job) -> pandas.DataFrame:
    import pandas as pd

    if len(frame) == 0:
        return pd.concat([frame, _empty_columns(job, frame.index)], axis=1)
    return pd.concat([frame, _run(job, frame).to_pandas()], axis=1)


def _bag_partition(prompts: Any, job: _Job) -> list[dict[str, Any]]:
    prompts = list(prompts)
    if not prompts:
        return []
    result = _run(job, prompts)
    with_parsed = job.options.get("response_format") is not None and result._options.model_class is not None
    rows = []
    for prompt, item in zip(prompts, result, strict=True):
        row = {"input": prompt, **row_values(item)}
        if with_parsed:
            row["parsed"] = item.answer.parsed if item.answer is not None else None
        rows.append(row)
    return rows


def _empty_columns(job: _Job, index: Any) -> pandas.DataFrame:
    import pandas as pd

    columns = dict(COLUMNS)
    if BatchOptions.of(response_format=job.options.get("response_format")).model_class is not None:
        columns = {
            "answer": "object",
            "parsed": "object",
            **{k: v for k, v in COLUMNS.items() if k != "answer"},
        }
    return pd.DataFrame({name: pd.Series(dtype=dtype, index=index) for name, dtype in columns.items()})


def _job(
    template: str | None,
    model: str | None,
    base_url: str | None,
    rpm: float | None,
    tpm: float | None,
    options: dict[str, Any],
) -> _Job:
    from . import _config

    env = os.environ
    retries, timeout = env.get(_config.ENV_MAX_RETRIES), env.get(_config.ENV_TIMEOUT)
    config = ClientConfig(  # the caller's configuration travels; workers only add their key
        model_id=model or env.get(_config.ENV_MODEL_ID),
        base_url=base_url or env.get(_config.ENV_BASE_URL),
        timeout=float(timeout) if timeout else None,
        max_retries=int(retries) if retries else None,
    )
    rpm, tpm = check_limit(rpm, "rpm"), check_limit(tpm, "tpm")
    limiter = f"flotorch-{uuid.uuid4().hex}" if rpm or tpm else None
    BatchOptions.of(**options)  # refuse bad options now, not on a worker
    return _Job(config, template, options, limiter, rpm, tpm)


def map_dataframe(
    ddf: dask.dataframe.DataFrame,
    *,
    template: str,
    model: str | None = None,
    base_url: str | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    **options: Any,
) -> dask.dataframe.DataFrame:
    """A lazy Dask DataFrame: ``ddf`` with the batch result columns appended, one batch per partition.

    ``template`` uses ``ddf``'s columns as fields (an unknown one is refused now, naming them);
    ``options`` are ``llm.batch``'s (``concurrency`` per partition, ``cache``, ``on_error``,
    ``response_format``, ``tools``, call parameters). ``rpm``/``tpm`` hold for the whole cluster.
    """
    import pandas as pd

    Inputs(pd.DataFrame(columns=list(ddf.columns)), template)  # check the fields before any work
    job = _job(template, model, base_url, rpm, tpm, _plain(options))
    meta = pd.concat([ddf._meta, _empty_columns(job, ddf._meta.index)], axis=1)
    return ddf.map_partitions(_dataframe_partition, job, meta=meta)


def map_bag(
    bag: dask.bag.Bag,
    *,
    template: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    **options: Any,
) -> dask.bag.Bag:
    """A lazy Bag of one dict per prompt of ``bag``: ``input`` and the batch result columns.

    The bag holds prompts (or message lists); ``template`` may use ``{item}``.
    """
    if template is not None and any(f != ITEM for f in template_fields(template)):
        Inputs(["x"], template)  # raises, naming the field
    job = _job(template, model, base_url, rpm, tpm, _plain(options))
    return bag.map_partitions(_bag_partition, job)


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    options = dict(options)
    options.pop("progress", None)  # no bars on workers
    cache = options.get("cache")
    if cache is not None and cache is not False:
        options["cache"] = os.fspath(os.path.abspath(os.fspath(cache)))  # a path, not an open file
    params = {k: options.pop(k) for k in list(options) if k not in _BATCH_OPTIONS}
    return {**options, "params": params}


_BATCH_OPTIONS = {"concurrency", "on_error", "cache", "response_format", "tools"}


def local_cluster(n_workers: int = 2, **kwargs: Any) -> Any:
    """The embedded default: ``distributed.Client(LocalCluster(processes=True, ...))``; close it when done
    (``client.close(); client.cluster.close()``, or use it in a ``with`` block)."""
    from distributed import Client, LocalCluster

    kwargs.setdefault("threads_per_worker", 1)
    kwargs.setdefault("dashboard_address", None)
    cluster = LocalCluster(n_workers=n_workers, processes=True, **kwargs)
    return Client(cluster)
