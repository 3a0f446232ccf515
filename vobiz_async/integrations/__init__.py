"""Integrations with voice-agent frameworks, each behind its own extra.

* :mod:`vobiz_async.integrations.pipecat`: a pipecat ``FrameSerializer`` for Vobiz
  Audio Streams (``pip install "vobiz-async[pipecat]"``).

Nothing here is imported by ``vobiz_async`` itself: importing a submodule needs its
framework installed.
"""

__all__: list[str] = []
