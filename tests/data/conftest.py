"""Fixtures of the data tests (helpers live in datahelp.py)."""
import pytest

from tests.data.datahelp import make_corpus


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    return root, make_corpus(root)
