"""Keep the public surface honest: the top level is exactly the reviewed subset of the
public modules' ``__all__``, sorted, importable, with every error class in it."""

from __future__ import annotations

import importlib
import pkgutil

import vobiz_async
from vobiz_async import errors

# What each public module contributes to ``vobiz_async.__all__``, reviewed by hand: a
# name added to a module's __all__ is public there; it reaches the top level only here.
REVIEWED: dict[str, set[str]] = {
    "callbacks": {
        "StreamCallbackEvent",
        "StreamStatusCallback",
        "callback_handler",
        "parse_callback",
    },
    "client": {"RestLimits", "RetryPolicy", "StreamsAPI", "Timeouts", "VobizClient"},
    "codec": {
        "AudioEncoding",
        "AudioFormat",
        "Framer",
        "Resampler",
        "pcm16_to_ulaw",
        "read_wav",
        "ulaw_to_pcm16",
        "write_wav",
    },
    "errors": {n for n in errors.__all__ if isinstance(getattr(errors, n), type)},
    "events": {
        "AudioCleared",
        "AudioReceived",
        "ByteOrderDetected",
        "Checkpoint",
        "CheckpointOutcome",
        "CheckpointVoided",
        "ClearAudio",
        "Command",
        "DtmfReceived",
        "InboundEvent",
        "MalformedFrame",
        "PlayAudio",
        "PlaybackCheckpointReached",
        "StatusCallbackReceived",
        "Stop",
        "StreamStarted",
        "StreamStopped",
        "Track",
        "UnknownEvent",
    },
    "models": {"StartStreamRequest", "StartedStream", "Stream", "StreamPage", "StreamStatus"},
    "protocol": {"ClearSummary", "PlayoutStats", "ProtocolStats", "StreamProtocol"},
    "recording": {"CallRecorder"},
    "server": {"VOBIZ_MEDIA_NETWORKS", "Limits", "MediaServer", "Pacing", "ServerStats", "serve"},
    "session": {"SessionStats", "StreamSession"},
    "signatures": {"SignatureMode", "validate_v2", "validate_v3", "verify_request"},
    "tokens": {"sign_stream_url", "verify_stream_token"},
    "trace": {"CallTrace", "read_trace"},
    "xml": {"ResponseBuilder", "StreamElement", "response_xml", "stream_xml"},
}


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_every_name_exists() -> None:
    """Every name in __all__ resolves, and the list is sorted so diffs stay readable."""
    assert vobiz_async.__all__ == sorted(vobiz_async.__all__, key=_isort_key)
    for name in vobiz_async.__all__:
        assert getattr(vobiz_async, name) is not None


def test_the_top_level_is_exactly_the_reviewed_subset() -> None:
    """Nothing reaches the top level unreviewed, and nothing reviewed is missing."""
    reviewed = set().union(*REVIEWED.values())
    assert set(vobiz_async.__all__) == reviewed
    for module_name, names in REVIEWED.items():
        module = importlib.import_module(f"vobiz_async.{module_name}")
        assert names <= set(module.__all__), module_name
        for name in names:
            assert getattr(vobiz_async, name) is getattr(module, name)


def test_every_public_module_declares_its_surface() -> None:
    """Each non-underscored module has an __all__ whose names exist (plumbing is _private)."""
    for info in pkgutil.walk_packages(vobiz_async.__path__, "vobiz_async."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("_") or ".adapters." in info.name or ".integrations." in info.name:
            continue
        module = importlib.import_module(info.name)
        assert hasattr(module, "__all__"), info.name
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.{name}"


def test_generic_plumbing_names_stay_out_of_the_top_level() -> None:
    """State machines' internals (State, Role) are not top-level names."""
    assert not {"State", "Role", "Event", "StreamLink", "Transport"} & set(vobiz_async.__all__)


def test_every_error_is_exported_and_rooted_at_vobiz_error() -> None:
    """All exception classes are public and share one root."""
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, errors.VobizError)
            assert name in vobiz_async.__all__
    assert issubclass(errors.RequestTimeoutError, TimeoutError)
    assert issubclass(errors.SessionTimeoutError, TimeoutError)
    assert issubclass(errors.ValidationError, ValueError)
    assert issubclass(errors.APIError, errors.RestError)
    assert issubclass(errors.TransportError, errors.RestError)
