"""Helpers the test folders share: clients and gateways, shells, widgets, HTML checks, notebooks."""
