"""Fixtures of the batch tests: one offline gateway per module, wrapped in ``Shaped``, reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flotorch_nb.gateway import OfflineGateway
from tests.support.batch import Shaped, shaped_gateway


@pytest.fixture(scope="module")
def shaped() -> Iterator[tuple[OfflineGateway, Shaped]]:
    with shaped_gateway() as pair:
        yield pair


@pytest.fixture
def gw(shaped: tuple[OfflineGateway, Shaped]) -> Iterator[OfflineGateway]:
    """The gateway, with no latency, fault, count or recorded request left by an earlier test."""
    gateway, shaping = shaped
    shaping.reset()
    gateway.requests.clear()
    yield gateway
    shaping.reset()
    gateway.faults.clear()
    gateway.requests.clear()


@pytest.fixture
def shaping(shaped: tuple[OfflineGateway, Shaped], gw: OfflineGateway) -> Shaped:
    return shaped[1]
