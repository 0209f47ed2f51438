"""How often several models give the same label to the same items (pure).

When models classify (``positive`` / ``negative``, a category, yes/no), the question a person asks of
a comparison over many items is "do they agree?". Labels are compared after :func:`normalize_label`
(case, surrounding spaces, quotes, Markdown emphasis and a final full stop do not count: ``"**Yes.**"``
is ``yes``). An item that some model did not label (it failed, or answered nothing) takes no part in
the shares, and the counts say so.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas

__all__ = ["Agreement", "agreement", "looks_like_labels", "normalize_label"]

# Quotes (straight, curly, guillemets), backticks and Markdown emphasis around a label do not count.
_EDGES = " \t\r\n\"'`*_\u201c\u201d\u2018\u2019\u00ab\u00bb"
_TRAILING = ".!;:,"


def normalize_label(text: str | None) -> str | None:
    """The label a short answer stands for: casefolded, trimmed of quotes, emphasis and final
    punctuation, inner spaces collapsed; ``None`` for no answer or an empty one."""
    if text is None:
        return None
    label = " ".join(str(text).split())
    previous = None
    while label != previous:  # "**Yes.**" -> "Yes." -> "Yes"
        previous = label
        label = label.strip(_EDGES).rstrip(_TRAILING)
    return label.casefold() or None


def looks_like_labels(answers: Iterable[str | None], *, max_words: int = 4, max_chars: int = 40) -> bool:
    """Whether answers are labels rather than prose: at least one, each at most ``max_words`` words and
    ``max_chars`` characters once normalized (so agreement is worth showing)."""
    labels = [normalize_label(a) for a in answers]
    present = [label for label in labels if label is not None]
    return bool(present) and all(
        len(label) <= max_chars and len(re.findall(r"\S+", label)) <= max_words for label in present
    )


@dataclass(frozen=True, slots=True)
class Agreement:
    """Agreement between models over items: overall, per pair of models, and per item."""

    models: tuple[str, ...]
    #: Items in all.
    items: int
    #: Items every model labelled (the denominator of the shares).
    compared: int
    #: Items, of those compared, where every model gave the same label.
    agreed: int
    #: Per item: True (all agree), False (they differ), None (not every model labelled it).
    per_item: tuple[bool | None, ...]
    #: (model a, model b) -> share of the items both labelled where they agree (None: none in common).
    pairwise: Mapping[tuple[str, str], float | None]

    @property
    def share(self) -> float | None:
        """Share of compared items where all models agree; None when no item was labelled by all."""
        return self.agreed / self.compared if self.compared else None

    def __str__(self) -> str:
        if self.share is None:
            return f"no item was labelled by all {len(self.models)} models"
        left = self.items - self.compared
        skipped = f" ({left} item{'s' if left != 1 else ''} without a label from every model left out)"
        return (
            f"all {len(self.models)} models agree on {self.agreed} of {self.compared} items "
            f"({self.share:.0%})" + (skipped if left else "")
        )

    def to_pandas(self) -> pandas.DataFrame:
        """The pairwise shares as a models by models table (1.0 on the diagonal)."""
        import pandas as pd

        frame = pd.DataFrame(index=list(self.models), columns=list(self.models), dtype="float64")
        for a in self.models:
            frame.loc[a, a] = 1.0
        for (a, b), share in self.pairwise.items():
            frame.loc[a, b] = frame.loc[b, a] = share if share is not None else float("nan")
        return frame


def agreement(answers: Mapping[str, Sequence[str | None]]) -> Agreement:
    """Agreement of ``{model: [answer per item]}`` (lists of equal length; ``None`` = no answer)."""
    models = tuple(answers)
    if len(models) < 2:
        raise ValueError("agreement needs the answers of at least two models")
    lengths = {len(answers[m]) for m in models}
    if len(lengths) != 1:
        raise ValueError(f"every model needs one answer per item; got lists of lengths {sorted(lengths)}")
    labels = {m: [normalize_label(a) for a in answers[m]] for m in models}
    items = lengths.pop()
    per_item: list[bool | None] = []
    for index in range(items):
        row = [labels[m][index] for m in models]
        per_item.append(None if None in row else len(set(row)) == 1)
    pairwise: dict[tuple[str, str], float | None] = {}
    for a, b in itertools.combinations(models, 2):
        both = [(x, y) for x, y in zip(labels[a], labels[b], strict=True) if x is not None and y is not None]
        pairwise[(a, b)] = sum(x == y for x, y in both) / len(both) if both else None
    compared = sum(flag is not None for flag in per_item)
    agreed = sum(flag is True for flag in per_item)
    return Agreement(models, items, compared, agreed, tuple(per_item), pairwise)
