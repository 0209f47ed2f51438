"""The offline assistant's data files: shipped as package data, read only when an answer needs them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import flotorch_nb.gateway as gateway_package
from flotorch_nb.gateway import _data

DATA = Path(gateway_package.__file__).parent / "data"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_every_data_file_is_package_data_and_parses() -> None:
    globs = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]["flotorch_nb.gateway"]
    files = sorted(DATA.glob("*"))
    assert {f.name for f in files} >= {"knowledge.toml", "phrases.toml", "words.toml"}
    for path in files:
        assert any(fnmatch(f"data/{path.name}", glob) for glob in globs), f"{path.name} would not ship"
        assert _data.load(path.stem), path.name


def test_importing_the_gateway_reads_no_data_file() -> None:
    code = (
        "import flotorch_nb.gateway, flotorch_nb.gateway._assistant as a\n"
        "from flotorch_nb.gateway import _data\n"
        "assert _data.load.cache_info().currsize == 0, 'read at import'\n"
        "from flotorch_nb.gateway._validate import Message\n"
        "assert 'Rayleigh' in a.answer([Message('user', 'Why is the sky blue?')])\n"
        "assert _data.load.cache_info().currsize > 0\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_word_lists_are_lower_case_words_except_names() -> None:
    lists = _data.load("words")
    for name, value in lists.items():
        if isinstance(value, str) and name != "not_names":
            assert value.split() == value.lower().split(), name
