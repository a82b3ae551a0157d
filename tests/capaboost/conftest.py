"""Fixtures shared by the core's oracle tests."""
import pytest
import torch


@pytest.fixture
def float64():
    """Oracle comparisons at 1e-6 and below: run them in float64, then restore the default."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
