"""Real data for the tests: skip cleanly when it is absent."""

import pytest

from skvq.datasets import load_embeddings


def embeddings(n_rows=None):
    """The first ``n_rows`` sentence embeddings (float32), or skip the test."""
    try:
        return load_embeddings(n_rows=n_rows)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
