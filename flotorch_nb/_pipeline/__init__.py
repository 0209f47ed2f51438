"""The one call pipeline: everything a call goes through between a ``FlotorchLLM`` method and the
transport, for every path that calls (invoke, streams, batch, compare, tools, evaluations).

``_loop.Pipeline`` owns the send loops, sync and async; ``_call`` holds the steps as plain functions
in the order a call lives them; ``_stream`` the streamed answers; ``_recover`` validation re-asks and
fallbacks as a pure plan over the one call; ``_hooks`` the hooks and what they are handed;
``_provenance`` the record every answer carries; ``_logsink`` the call log's plug. Nothing here is
imported by ``import flotorch_nb`` beyond what the client needs, and nothing here imports a surface.
"""
