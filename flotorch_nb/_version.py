"""The package's version, in a module of its own so that any module can read it (a provenance record
names it) without importing the package's ``__init__``, which imports those modules back."""

__version__ = "0.1.0"
