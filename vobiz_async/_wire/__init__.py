"""Provider dialects of the media WebSocket: JSON text <-> typed events and commands.

One module per provider. Each is pure (no state, no counters, no I/O) and uses one
parsing library (msgspec). The protocol state machine (``vobiz_async.protocol``) owns
everything that depends on the stream so far: formats, byte order, checkpoints,
counters.
"""
