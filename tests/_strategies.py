"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def json_values(
    keys: st.SearchStrategy[str] | None = None, *, max_leaves: int = 20
) -> st.SearchStrategy[Any]:
    """Any JSON value (nested lists and objects), with object keys drawn from ``keys``."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=30)
    )
    key_strategy = keys if keys is not None else st.text(max_size=10)
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(key_strategy, children, max_size=6)
        ),
        max_leaves=max_leaves,
    )
