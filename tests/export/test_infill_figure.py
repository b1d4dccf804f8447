"""The in-fill figure (export/infill_figure.py): only the patch of each tile is the samplers'."""
import cv2
import numpy as np

from infolens.export import infill_figure as fig_module


def test_infill_figure_composites_only_the_patch(tmp_path):
    K = 8
    fig = fig_module.infill_figure(K, fig_module.coffee(), fig_module.FIGURE_CENTRES[:2])
    scale, gap, head = fig_module.TILE // (3 * K), 10, 30
    side, columns = 3 * K * scale, 1 + sum(n for _, n, _ in fig_module.FIGURE_COLUMNS)
    assert fig.dtype == np.uint8 and fig.shape == (head + 2 * (side + gap), gap + columns * (side + gap), 3)
    outside = np.ones((side, side), bool)
    outside[K * scale : 2 * K * scale, K * scale : 2 * K * scale] = False
    original = fig[head : head + side, gap : gap + side]
    for col in range(1, columns):
        tile = fig[head : head + side, gap + col * (side + gap) : gap + col * (side + gap) + side]
        np.testing.assert_array_equal(tile[outside], original[outside])
        assert not np.array_equal(tile[~outside], original[~outside])
    ok, png = cv2.imencode(".png", fig)
    assert ok and len(png) < 1.5 * 2**20
