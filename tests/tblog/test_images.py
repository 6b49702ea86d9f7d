"""The IMAGES tab's grids (tblog/_extras.py `image_grid`): readable row labels and captions."""

from __future__ import annotations

import numpy as np


def _ink(area: np.ndarray) -> tuple[int, int]:
    """(height, right edge) of the dark pixels in an RGB area."""
    rows, cols = np.nonzero(area.min(axis=2) < 128)
    return (int(rows.max() - rows.min() + 1), int(cols.max() + 1)) if len(rows) else (0, 0)


def test_grid_labels_are_legible_and_cut_to_their_column() -> None:
    from tbxsweep.tblog._extras import _CELL, _LABEL_W, image_grid

    img = np.zeros((28, 28, 1))
    rows = [("5", [(img, "7"), (img, "")]), ("aquarium_fish_tank", [(img, "sweet_pepper")])]
    grid = image_grid(rows, 2)
    cell_h = _CELL + 16  # a caption line under each image
    assert grid.shape == (2 * (cell_h + 4) + 4, _LABEL_W + 2 * (_CELL + 4) + 4, 3)
    for r in range(2):
        top = 4 + r * (cell_h + 4)
        height, right = _ink(grid[top : top + _CELL, :_LABEL_W])
        assert height >= 11, (r, height)  # Pillow's 10-pixel bitmap font was unreadable
        assert right <= _LABEL_W - 4, (r, right)  # a long name is cut, not drawn over images
    caption = grid[4 + _CELL : 4 + cell_h, _LABEL_W : _LABEL_W + _CELL]
    assert 8 <= _ink(caption)[0] < 16
    # a wide grid (TensorBoard shows it scaled down to its card): labels twice as large
    wide = image_grid([("aquarium_fish_tank", [(img, "")] * 10)], 10)
    assert wide.shape == (_CELL + 8, 2 * _LABEL_W + 10 * (_CELL + 4) + 4, 3)
    height, right = _ink(wide[4 : 4 + _CELL, : 2 * _LABEL_W])
    assert height >= 22 and right <= 2 * _LABEL_W - 4, (height, right)
