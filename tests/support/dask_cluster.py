"""A two-worker Dask ``LocalCluster`` whose workers use the offline gateway; this module holds no tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def two_workers(monkeypatch: pytest.MonkeyPatch, url: str, key: str, **env: str) -> Iterator[None]:
    """Two worker processes that inherit ``FLOTORCH_API_KEY``/``FLOTORCH_BASE_URL`` (as documented)
    and ``env``; closed afterwards (the workers exit). Skips without pandas, dask or distributed."""
    pytest.importorskip("pandas")
    pytest.importorskip("dask.dataframe")
    pytest.importorskip("distributed")
    from flotorch_nb.dask import local_cluster

    for name, value in {"FLOTORCH_API_KEY": key, "FLOTORCH_BASE_URL": url, **env}.items():
        monkeypatch.setenv(name, value)
    client = local_cluster(2, dashboard_address=":0")  # a free port: 8787 may be taken by another run
    try:
        yield
    finally:
        client.close()
        client.cluster.close()
