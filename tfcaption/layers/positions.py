"""Fixed sinusoidal position tables: 1-D for caption tokens, 2-D for image grids."""

import numpy as np


def sinusoid_table(rows, dim):
    """Interleaved sin/cos positional table (Vaswani et al.); row 0 (padding) is zeros.

    Row `p`, channel `2i` is `sin(p / 10000^(2i/dim))` and channel `2i + 1` is `cos` of the same angle.

    Example:
    >>> [round(float(v), 3) for v in sinusoid_table(3, 4)[1]]
    [0.841, 0.54, 0.01, 1.0]
    """
    positions = np.arange(rows, dtype=np.float64)[:, None]
    rates = 1.0 / np.power(10000.0, 2 * (np.arange(dim) // 2) / dim)
    angles = positions * rates[None]
    table = np.where(np.arange(dim) % 2 == 0, np.sin(angles), np.cos(angles))
    table[0] = 0.0
    return table.astype("float32")


def sinusoid_2d(rows, cols, dim):
    """2-D sinusoidal positions for a `rows x cols` grid, row-major: `(rows * cols, dim)` float32.

    The first `dim / 2` channels are the 1-D table of the cell's row, the last `dim / 2` that of its
    column (the 2-D extension used by Parmar et al.'s Image Transformer and DETR), so attention can
    tell both axes apart. Positions count from 1, because row 0 of the 1-D table is the zero padding row.

    Example:
    >>> table = sinusoid_2d(2, 3, 8)
    >>> table.shape, bool((table[1, :4] == table[0, :4]).all()), bool((table[3, 4:] == table[0, 4:]).all())
    ((6, 8), True, True)
    """
    if dim % 2:
        raise ValueError(f"2-D sinusoidal positions need an even width, got {dim}.")
    half = dim // 2
    row_table = sinusoid_table(rows + 1, half)[1:]
    col_table = sinusoid_table(cols + 1, half)[1:]
    grid_rows = np.repeat(row_table, cols, axis=0)
    grid_cols = np.tile(col_table, (rows, 1))
    return np.concatenate([grid_rows, grid_cols], axis=1).astype("float32")
