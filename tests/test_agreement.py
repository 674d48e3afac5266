"""Agreement measures against scipy-free hand computations and known cases."""

import numpy as np
import pytest

from onnxcam.metrics.agreement import peak_distance, spearman, top_region, top_region_iou


def _pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_spearman_is_one_for_monotone_rescaling_and_minus_one_for_reversal():
    rng = np.random.default_rng(0)
    a = rng.random((8, 9))
    assert spearman(a, np.exp(3 * a)) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)


def test_spearman_with_ties_equals_pearson_of_average_ranks():
    a = np.array([1.0, 2.0, 2.0, 3.0, 5.0, 5.0])
    b = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0])
    ranks_a = np.array([1, 2.5, 2.5, 4, 5.5, 5.5])  # by hand
    ranks_b = np.array([3, 1.5, 4, 1.5, 5, 6])
    assert spearman(a, b) == pytest.approx(_pearson(ranks_a, ranks_b))


def test_spearman_of_a_constant_map_is_undefined():
    assert np.isnan(spearman(np.ones((4, 4)), np.arange(16.0).reshape(4, 4)))


def test_top_region_iou_identical_disjoint_and_half_overlap():
    a = np.zeros((10, 10))
    a[:2] = 1  # top 20 pixels
    b = np.zeros((10, 10))
    b[-2:] = 1
    c = np.zeros((10, 10))
    c[1:3] = 1
    assert top_region(a, 0.2).sum() == 20
    assert top_region_iou(a, a, 0.2) == 1.0
    assert top_region_iou(a, b, 0.2) == 0.0
    assert top_region_iou(a, c, 0.2) == pytest.approx(10 / 30)


def test_peak_distance_in_pixels():
    a = np.zeros((20, 20))
    a[2, 3] = 1
    b = np.zeros((20, 20))
    b[5, 7] = 1
    assert peak_distance(a, b) == pytest.approx(5.0)
