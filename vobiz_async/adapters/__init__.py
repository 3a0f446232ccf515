"""Framework adapters: carry a :class:`~vobiz_async.server.MediaServer`'s streams on the
WebSocket routes of an application you already run.

* :mod:`vobiz_async.adapters.starlette`: Starlette and FastAPI (``vobiz-async[fastapi]``).
* :mod:`vobiz_async.adapters.aiohttp`: ``aiohttp.web`` (``vobiz-async[aiohttp-server]``;
  aiohttp is already a dependency).

Each only moves frames and maps close codes; admission, pacing, checkpoints, clears,
limits and binding are the server's (see :class:`~vobiz_async.server.StreamLink`).
"""

__all__: list[str] = []  # the adapters are imported by module (their frameworks are extras)
