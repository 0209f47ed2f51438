"""Pure: how large an answer the offline models make, and the checks that keep a fill within it.

The gateway plans on its event loop, so a fill must stay small whatever the schema asks: a size
keyword above ``MAX_SIZE`` (``minItems: 10**9``) is refused up front by ``oversized_keyword``, and a
fill that would make more than ``MAX_VALUES`` values or ``MAX_CHARS`` characters of text (nested or
recursive arrays multiply), or do more than ``MAX_STEPS`` steps of schema work (``allOf`` parts that
reference each other double at every level), stops with ``SchemaTooLargeError``. ``Taken`` tracks
the items of a ``uniqueItems`` array in constant time per item.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_CHARS",
    "MAX_SIZE",
    "MAX_STEPS",
    "MAX_VALUES",
    "SchemaTooLargeError",
    "Taken",
    "oversized_keyword",
]

#: The largest ``minItems`` / ``minLength`` / ``minProperties`` / ``minContains`` a schema may ask for.
MAX_SIZE = 1000
#: The most values (objects, arrays, scalars) one fill may make: 10x a maximal flat array.
MAX_VALUES = 10 * MAX_SIZE
#: The most characters of text one fill may make: room for a maximal flat array of maximal strings.
MAX_CHARS = 2 * MAX_SIZE * MAX_SIZE
#: The most schema work one fill may do: $ref/allOf merges (by what they copy), anyOf/enum scans.
MAX_STEPS = 200_000
_SIZE_KEYWORDS = ("minItems", "minLength", "minProperties", "minContains")


class SchemaTooLargeError(Exception):
    """The schema asks for an answer larger than the offline gateway makes (see the module docstring)."""


def oversized_keyword(schema: Any) -> tuple[str, float] | None:
    """The first size keyword above ``MAX_SIZE`` in ``schema`` (its JSON pointer and value), if any.

    Walks every nested object and list (not only where a keyword is meaningful: cheap, and safe for
    anything a ``$ref`` may point at), without recursion, so a deep schema cannot exhaust the stack.
    """
    stack: list[tuple[Any, str]] = [(schema, "")]
    while stack:
        node, pointer = stack.pop()
        if isinstance(node, Mapping):
            for keyword in _SIZE_KEYWORDS:
                size = node.get(keyword)
                if isinstance(size, int | float) and not isinstance(size, bool) and size > MAX_SIZE:
                    return f"{pointer}/{keyword}", size
            stack.extend((child, f"{pointer}/{key}") for key, child in node.items())
        elif isinstance(node, list):
            stack.extend((child, f"{pointer}/{index}") for index, child in enumerate(node))
    return None


class Taken:
    """The items of one ``uniqueItems`` array so far, with constant-time membership for scalars.

    Keys keep JSON's distinctions (``true`` is not ``1``) while ``1`` and ``1.0`` stay equal, as
    they are in JSON Schema; objects and arrays are compared one by one (they are rare in such arrays).
    """

    def __init__(self) -> None:
        self.keys: set[tuple[str, Any]] = set()
        self.others: list[Any] = []
        self.cursor: dict[Any, int] = {}  # where unique_variant's last search stopped

    @staticmethod
    def _key(value: Any) -> tuple[str, Any] | None:
        if isinstance(value, bool):
            return ("bool", value)
        if isinstance(value, int | float):
            return ("number", value)
        if isinstance(value, str):
            return ("string", value)
        return ("null", None) if value is None else None

    def __contains__(self, value: Any) -> bool:
        key = self._key(value)
        return key in self.keys if key is not None else value in self.others

    def __len__(self) -> int:
        return len(self.keys) + len(self.others)

    def add(self, value: Any) -> None:
        key = self._key(value)
        if key is not None:
            self.keys.add(key)
        else:
            self.others.append(value)
