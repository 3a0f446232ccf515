"""Keep the public surface honest: __all__ is sorted, complete and importable."""

from __future__ import annotations

import vobiz_async
from vobiz_async import errors


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_every_name_exists() -> None:
    """Every name in __all__ resolves, and the list is sorted so diffs stay readable."""
    assert vobiz_async.__all__ == sorted(vobiz_async.__all__, key=_isort_key)
    for name in vobiz_async.__all__:
        assert getattr(vobiz_async, name) is not None


def test_every_error_is_exported_and_rooted_at_vobiz_error() -> None:
    """All exception classes are public and share one root."""
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, errors.VobizError)
            assert name in vobiz_async.__all__
    assert issubclass(errors.RequestTimeoutError, TimeoutError)
    assert issubclass(errors.ValidationError, ValueError)
