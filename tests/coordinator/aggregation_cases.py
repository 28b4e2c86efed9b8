"""Shared hypothesis strategies and helpers for the aggregation tests."""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

finite32 = st.floats(-10, 10, width=32)


def f32(*values):
    """A float32 vector of ``values``."""
    return np.array(values, dtype=np.float32)


@st.composite
def cohorts(draw, num_params, max_size=6):
    """A list of (delta, num_examples) of one model size."""
    size = draw(st.integers(1, max_size))
    return [
        (draw(hnp.arrays(np.float32, num_params, elements=finite32)), draw(st.integers(1, 500)))
        for _ in range(size)
    ]
