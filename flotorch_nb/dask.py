"""Beyond one machine: map a prompt over a Dask DataFrame or Bag (``pip install 'flotorch_nb[dask]'``).

``map_dataframe(ddf, template=..., model=...)`` returns a lazy Dask DataFrame with the
``BatchResult.to_pandas()`` columns appended (answer, tokens, latency, source, error_type, error...);
``map_bag(bag, ...)`` a Bag of one dict per prompt. Each partition is one ``llm.batch`` run.
A result column never replaces a column of the data: a DataFrame that already has ``answer`` (or
``model``, ``error``...) is refused before any work, and ``prefix="llm_"`` names the result columns
``llm_answer``, ``llm_model``... instead. The configuration is checked as ``FlotorchLLM()`` checks it,
in the caller, before any work (``ConfigurationError``), not on each worker.

What crosses the wire is configuration, never a secret or a live client (clients do not pickle):

- The task graph holds ``ClientConfig`` (model, base URL, endpoint, timeout, retries) and the batch
  options, not the API key. Each worker process reads ``FLOTORCH_API_KEY`` from its own environment
  and builds **one** pooled ``FlotorchLLM`` per configuration, reused by all its partitions (on the
  process's one loop, _bridge, so connections are reused too). To give workers the key: start them with the
  variable set (``FLOTORCH_API_KEY=... dask worker tcp://scheduler:8786``, or your cluster manager's
  environment settings); ``LocalCluster`` workers inherit it from the process that starts them. A
  ``distributed.diagnostics.plugin.Environ({"FLOTORCH_API_KEY": ...})`` nanny plugin also works,
  but it passes the key through the scheduler.
- ``rpm``/``tpm`` hold for the whole cluster: every request of the job asks one ``RateLimiter``
  kept on the scheduler (a scheduler plugin registered on first use), so adding workers never adds
  rate. A 429 pauses every worker of the job.
- ``concurrency="auto"``: one window per gateway key for the whole cluster, also on the scheduler
  (``batch._auto.AutoConcurrency``): each attempt takes a place there before it is sent and tells it
  how it went after (status and rate-limit headers, never the key: workers name the key by its
  fingerprint). A partition runs at most ``AUTO_PER_PARTITION`` requests at once.
- ``cache=PATH`` is the answer cache (SQLite WAL): workers on one machine share the file, so a
  partition re-run after a worker died sends only what had not been answered.
- Per-item errors are kept as rows (``error_type``, ``error``), as in a local batch. With
  ``on_error="raise"``, ``.compute()`` raises the typed ``BatchError`` (every ``FlotorchError``
  pickles; the worker's client stays behind).

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

from ._admission import UNTIL_SETTLED, Asked, Spent, Ticket
from ._errors import ConfigurationError
from .batch import COLUMNS, BatchOptions, Grant, Inputs, RateLimiter, run_sync, template_fields
from .batch._auto import AutoConcurrency, AutoGate, AutoTicket, Outcome
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
#: With ``concurrency="auto"``, the most requests one partition has in flight (the cluster's window
#: decides how many of them go at once).
AUTO_PER_PARTITION = 64


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
        #: ``concurrency="auto"``: one window per gateway key, and the places taken in them.
        self.windows: dict[str, AutoConcurrency] = {}
        self.places: dict[tuple[str, int], AutoTicket] = {}

    async def start(self, scheduler: Any) -> None:
        """Install the handlers the workers call."""
        scheduler.handlers.update(
            {
                "flotorch_rate_try": self.try_acquire,
                "flotorch_rate_settle": self.settle,
                "flotorch_rate_pause": self.pause,
                "flotorch_auto_take": self.auto_take,
                "flotorch_auto_settle": self.auto_settle,
            }
        )

    async def auto_take(self, key: str) -> int | float:
        """A place in the window of gateway ``key`` (its number, an int), or seconds to wait (a float);
        waits up to ``RECHECK_S`` on the scheduler's loop for one to be freed."""
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = AutoConcurrency()
        answer = await window.take()
        if isinstance(answer, AutoTicket):
            self.places[(key, answer.seq)] = answer
            return answer.seq
        return float(answer)

    def auto_settle(
        self, key: str, seq: int, kind: str, headers: dict[str, str] | None, tokens: int = 0
    ) -> int:
        """The attempt that held place ``seq`` ended so (``outcome_of``); the window's size now."""
        window, place = self.windows.get(key), self.places.pop((key, seq), None)
        if window is None:
            return 0
        if place is not None:
            window.settle(place, (kind, headers, tokens))
        return window.settled_at

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

    def _ask(self, request: Asked) -> tuple[Any, int]:
        """The question sent to the scheduler (a future of its answer) and the tokens it asks for."""
        limiter = self._limiter
        tokens = request.estimated_tokens if limiter._tpm is not None else 0
        return limiter._call("flotorch_rate_try", rpm=limiter._rpm, tpm=limiter._tpm, tokens=tokens), tokens

    async def aadmit(self, request: Asked) -> Ticket | float:
        future, tokens = self._ask(request)
        return self._answer(await asyncio.wrap_future(future), tokens)

    def admit(self, request: Asked) -> Ticket | float:
        """For a sync caller in a thread of its own (a batch's items are asked with ``aadmit``)."""
        future, tokens = self._ask(request)
        return self._answer(future.result(), tokens)

    def settle(self, ticket: Ticket, spent: Spent | None) -> None:
        assert isinstance(ticket, Grant)
        limiter = self._limiter
        if (seconds := pause_after(spent, self._pause_for)) is not None:
            limiter._call("flotorch_rate_pause", seconds=seconds)
        if limiter._tpm is not None:
            limiter._call("flotorch_rate_settle", grant=ticket.id, tokens=spent.tokens if spent else 0)


class _ClusterWindow:
    """The worker's side of a window on the scheduler: ``batch._auto.Places`` over RPC, and the
    ``AutoWindow`` a batch's options carry."""

    ceiling = AUTO_PER_PARTITION

    def __init__(self, worker: Any, key: str) -> None:
        self._worker, self._key = worker, key
        self._size = 0

    def _call(self, op: str, **kwargs: Any) -> Any:
        method = getattr(self._worker.scheduler, op)
        return asyncio.run_coroutine_threadsafe(
            method(key=self._key, **kwargs), self._worker.loop.asyncio_loop
        )

    @staticmethod
    def _answer(answer: int | float) -> AutoTicket | float:
        if isinstance(answer, float):
            # "Full" already waited on the scheduler: ask again at once rather than sleep here.
            return 0.001 if answer == UNTIL_SETTLED else answer
        return AutoTicket(int(answer), time.monotonic())

    def try_take(self) -> AutoTicket | float:
        return self._answer(self._call("flotorch_auto_take").result())

    async def take(self) -> AutoTicket | float:
        return self._answer(await asyncio.wrap_future(self._call("flotorch_auto_take")))

    def settle(self, ticket: AutoTicket, outcome: Outcome) -> None:
        kind, headers, tokens = outcome
        future = self._call(
            "flotorch_auto_settle",
            seq=ticket.seq,
            kind=kind,
            headers=dict(headers) if headers else None,
            tokens=tokens,
        )
        future.add_done_callback(self._noted)

    def _noted(self, future: Any) -> None:
        if not future.cancelled() and future.exception() is None:
            self._size = int(future.result())

    def ceiling_for(self, rate: float) -> int:
        return self.ceiling  # the cluster's limiter holds rpm for the whole job

    def gate(self, rate: float | None = None) -> AutoGate:
        return AutoGate(self, rate)

    @property
    def settled_at(self) -> int:
        return self._size


_PLUGIN_READY: set[int] = set()
_LOCAL_LIMITERS: dict[str, RateLimiter] = {}


def _scheduler_worker() -> Any:
    """This process's Dask worker with the plugin registered on its scheduler (None: not a worker)."""
    try:
        from distributed import get_client, get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    if os.getpid() not in _PLUGIN_READY:
        get_client().register_plugin(RatePlugin(), name=PLUGIN_NAME)  # idempotent: the first one stays
        _PLUGIN_READY.add(os.getpid())
    return worker


def _limiter(job: _Job) -> Any:
    if job.limiter is None:
        return None
    worker = _scheduler_worker()
    if worker is None:  # not on a distributed worker: this process is the cluster
        with _CLIENTS_LOCK:
            return _LOCAL_LIMITERS.setdefault(job.limiter, RateLimiter(job.rpm, job.tpm))
    return _ClusterLimiter(worker, job.limiter, job.rpm, job.tpm)


def _window(job: _Job, llm: FlotorchLLM) -> _ClusterWindow | None:
    """``concurrency="auto"`` on a worker: the cluster's window for this key (else the process's)."""
    if job.options.get("concurrency") != "auto":
        return None
    worker = _scheduler_worker()
    return _ClusterWindow(worker, llm.gateway_key) if worker is not None else None


# -- partitions --------------------------------------------------------------------------------------
def _run(job: _Job, inputs: Any) -> Any:
    llm = worker_client(job.config)
    options = BatchOptions.of(
        template=job.template, progress=False, limiter=_limiter(job), window=_window(job, llm), **job.options
    )
    return run_sync(llm, inputs, options)


def _dataframe_partition(frame: pandas.DataFrame, job: _Job, prefix: str = "") -> pandas.DataFrame:
    import pandas as pd

    if len(frame) == 0:
        return pd.concat([frame, _empty_columns(job, frame.index, prefix)], axis=1)
    return pd.concat([frame, _run(job, frame).to_pandas().add_prefix(prefix)], axis=1)


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


def _empty_columns(job: _Job, index: Any, prefix: str = "") -> pandas.DataFrame:
    import pandas as pd

    columns = dict(COLUMNS)
    if BatchOptions.of(response_format=job.options.get("response_format")).model_class is not None:
        columns = {
            "answer": "object",
            "parsed": "object",
            **{k: v for k, v in COLUMNS.items() if k != "answer"},
        }
    return pd.DataFrame(
        {prefix + name: pd.Series(dtype=dtype, index=index) for name, dtype in columns.items()}
    )


def _check_columns(data: Any, added: Any, prefix: str) -> None:
    """Refuse result columns that would land on the data's own: two ``answer`` columns mix them."""
    taken = set(data)
    clashes = [str(name) for name in added if name in taken]
    if clashes:
        suggested = "flotorch_" if prefix == "llm_" else "llm_"
        raise ConfigurationError(
            f"the DataFrame already has the column{'s' if len(clashes) > 1 else ''} "
            f"{', '.join(map(repr, clashes))}, which the results would overwrite; pass a prefix for the "
            f"result columns, e.g. map_dataframe(..., prefix={suggested!r}) gives "
            f"{', '.join(repr(suggested + name.removeprefix(prefix)) for name in clashes)}, "
            "or rename those columns"
        )


def _job(
    template: str | None,
    model: str | None,
    base_url: str | None,
    rpm: float | None,
    tpm: float | None,
    options: dict[str, Any],
) -> _Job:
    from . import _config
    from ._pipeline._call import prepare

    env = os.environ
    # Checked here exactly as FlotorchLLM() checks it, so a mistake is one ConfigurationError now, not
    # a bare ValueError from every partition. The key is the workers' own: this process may not have it.
    settings = _config.resolve(model, env.get(_config.ENV_API_KEY) or _WORKERS_KEY, base_url, env=env)
    config = ClientConfig(  # the caller's configuration travels; workers only add their key
        model_id=model or env.get(_config.ENV_MODEL_ID),
        base_url=base_url or env.get(_config.ENV_BASE_URL),
        timeout=_config._timeout_from_env(env),
        max_retries=_config._retries_from_env(env),
    )
    rpm, tpm = check_limit(rpm, "rpm"), check_limit(tpm, "tpm")
    limiter = f"flotorch-{uuid.uuid4().hex}" if rpm or tpm else None
    BatchOptions.of(**options)  # refuse bad options now, not on a worker
    params = dict(options["params"])
    extra_body = params.pop("extra_body", None)
    probe = [{"role": "user", "content": "probe"}]  # parameters, tools and schema: the same for every row
    prepare(
        settings,
        probe,
        options.get("tools"),
        options.get("response_format"),
        extra_body,
        params,
        stream=False,
    )
    return _Job(config, template, options, limiter, rpm, tpm)


#: Stands for the workers' key while the caller's configuration is checked (never sent anywhere).
_WORKERS_KEY = "read-from-each-workers-environment"


def map_dataframe(
    ddf: dask.dataframe.DataFrame,
    *,
    template: str,
    model: str | None = None,
    base_url: str | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    prefix: str = "",
    **options: Any,
) -> dask.dataframe.DataFrame:
    """A lazy Dask DataFrame: ``ddf`` with the batch result columns appended, one batch per partition.

    ``template`` uses ``ddf``'s columns as fields (an unknown one is refused now, naming them);
    ``options`` are ``llm.batch``'s (``concurrency`` per partition, ``cache``, ``on_error``,
    ``response_format``, ``tools``, call parameters). ``rpm``/``tpm`` hold for the whole cluster.
    ``prefix`` starts every result column's name (``prefix="llm_"``: ``llm_answer``, ``llm_error``...);
    a result column that ``ddf`` already has is a ``ConfigurationError`` before any work.
    """
    import pandas as pd

    if not isinstance(prefix, str):
        raise ConfigurationError(f"prefix must be a string such as 'llm_', got {type(prefix).__name__}")
    Inputs(pd.DataFrame(columns=list(ddf.columns)), template)  # check the fields before any work
    job = _job(template, model, base_url, rpm, tpm, _plain(options))
    added = _empty_columns(job, ddf._meta.index, prefix)
    _check_columns(ddf.columns, added.columns, prefix)
    meta = pd.concat([ddf._meta, added], axis=1)
    return ddf.map_partitions(_dataframe_partition, job, prefix, meta=meta)


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
    from .cache import resolve_cache

    options = dict(options)
    options.pop("progress", None)  # no bars on workers
    cache = options.get("cache")
    if cache is not None and cache is not False:
        found = resolve_cache(cache)  # ConfigurationError for what FlotorchLLM(cache=...) refuses
        options["cache"] = os.fspath(found.path) if found is not None else False  # a path, not a file
    params = {k: options.pop(k) for k in list(options) if k not in _BATCH_OPTIONS}
    return {**options, "params": params}


_BATCH_OPTIONS = {"concurrency", "on_error", "cache", "response_format", "tools"}


def local_cluster(n_workers: int = 2, **kwargs: Any) -> Any:
    """The embedded default: ``distributed.Client(LocalCluster(processes=True, ...))``; close it when done
    (``client.close(); client.cluster.close()``, or use it in a ``with`` block)."""
    from distributed import Client, LocalCluster

    kwargs.setdefault("threads_per_worker", 1)
    # Loopback and a free port: never 0.0.0.0, and never the fixed 8787 another cluster may hold.
    kwargs.setdefault("dashboard_address", "127.0.0.1:0")
    cluster = LocalCluster(n_workers=n_workers, processes=True, **kwargs)
    return Client(cluster)
