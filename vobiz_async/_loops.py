"""Which event loop runs the CLI's commands: uvloop when installed (``vobiz-async[speed]``),
else asyncio's own (pure helpers; the CLI's ``--loop`` picks).

uvloop's transports make each read and write cheaper; the media server does not need it
(everything works on the default loop) and applications that run ``serve()`` in their
own loop choose theirs (``uvloop.run(main())``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

from .errors import ValidationError

__all__ = ["LoopChoice", "loop_factory", "loop_name"]

LoopChoice = Literal["auto", "asyncio", "uvloop"]


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``asyncio.Runner(loop_factory=...)``; None: asyncio's default.

    Args:
        choice: ``"auto"`` (uvloop when importable, else asyncio), ``"asyncio"`` or
            ``"uvloop"``.

    Raises:
        ValidationError: an unknown choice, or ``"uvloop"`` when it is not installed.
    """
    if choice not in ("auto", "asyncio", "uvloop"):
        raise ValidationError("loop", f"must be auto, asyncio or uvloop, got {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ValidationError(
                "loop", "uvloop is not installed: pip install 'vobiz-async[speed]'"
            ) from None
        return None
    return uvloop.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``"uvloop"``, ``"asyncio"``, or the module of another loop implementation."""
    module = type(loop).__module__
    if module.startswith("uvloop"):
        return "uvloop"
    if module.startswith("asyncio"):
        return "asyncio"
    return module.split(".", 1)[0]
