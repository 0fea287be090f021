"""Tests for busi_lite.evaluation.metrics: hand-computed cases, nan cases, sklearn agreement."""

import json
import math

import numpy as np
import pytest

from busi_lite.evaluation import metrics as M

nan = float("nan")

# 10-sample hand example (normal=0, benign=1, malignant=2).
#   idx:     0  1  2  3  4  5  6  7  8  9
Y_TRUE = [2, 2, 2, 2, 1, 1, 1, 0, 0, 0]
Y_PRED = [2, 2, 2, 1, 2, 1, 0, 0, 0, 2]
# Malignant positive: true-2 rows 0-3 predicted 2,2,2,1 -> TP=3, FN=1;
# negatives rows 4-9 predicted 2,1,0,0,0,2 -> FP=2, TN=4.


def _random_case(seed, n=200, c=3):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[rng.integers(0, c, n)]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y_true = np.argmax(logits + rng.normal(scale=1.0, size=(n, c)), axis=1)
    return y_true, proba


# --------------------------------------------------------------------------- #
# confusion / malignant metrics / accuracy / recall / F1
# --------------------------------------------------------------------------- #
def test_confusion_matrix_hand():
    cm = M.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.dtype == np.int64 and cm.shape == (3, 3)
    np.testing.assert_array_equal(cm, [[2, 0, 1], [1, 1, 1], [0, 1, 3]])


def test_malignant_metrics_hand():
    m = M.malignant_metrics(Y_TRUE, Y_PRED)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 2, 4)
    assert all(type(m[k]) is int for k in ("tp", "fn", "fp", "tn"))
    assert m["recall"] == pytest.approx(0.75)
    assert m["mar"] == pytest.approx(0.25)
    assert m["far"] == pytest.approx(2 / 6)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] + m["mar"] == pytest.approx(1.0)


def test_malignant_metrics_other_positive():
    m = M.malignant_metrics(Y_TRUE, Y_PRED, positive=0)
    # true-0 rows 7-9 -> 0,0,2 ; predicted 0 elsewhere: row 6
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 6)


def test_malignant_metrics_no_positives_is_nan():
    m = M.malignant_metrics([0, 1, 1, 0], [0, 1, 0, 0])
    assert math.isnan(m["recall"]) and math.isnan(m["mar"]) and math.isnan(m["precision"])
    assert m["far"] == 0.0
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (0, 0, 0, 4)


def test_malignant_metrics_no_predicted_positives():
    m = M.malignant_metrics([2, 2, 0, 1], [1, 0, 0, 1])
    assert math.isnan(m["precision"])
    assert m["recall"] == 0.0 and m["mar"] == 1.0 and m["far"] == 0.0


def test_malignant_metrics_no_negatives_far_nan():
    m = M.malignant_metrics([2, 2], [2, 1])
    assert math.isnan(m["far"]) and m["recall"] == 0.5


def test_accuracy_hand_and_empty():
    assert M.accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.6)
    assert isinstance(M.accuracy(Y_TRUE, Y_PRED), float)
    assert math.isnan(M.accuracy([], []))


def test_per_class_recall_hand_and_absent_class():
    np.testing.assert_allclose(M.per_class_recall(Y_TRUE, Y_PRED, 3), [2 / 3, 1 / 3, 3 / 4])
    r = M.per_class_recall([0, 0, 1], [0, 2, 1], 3)
    np.testing.assert_allclose(r[:2], [0.5, 1.0])
    assert math.isnan(r[2])


def test_malignant_recall_equals_per_class_recall():
    assert M.per_class_recall(Y_TRUE, Y_PRED, 3)[2] == M.malignant_metrics(Y_TRUE, Y_PRED)["recall"]


def test_macro_f1_hand():
    # class0: TP2 FP1 FN1 -> 2/3; class1: TP1 FP1 FN2 -> 0.4; class2: TP3 FP2 FN1 -> 2/3
    assert M.macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx((2 / 3 + 0.4 + 2 / 3) / 3)


def test_macro_f1_skips_absent_classes():
    # class 2 absent from both -> mean over classes 0, 1 only (each 2/3)
    assert M.macro_f1([0, 0, 1], [0, 1, 1], 3) == pytest.approx(2 / 3)
    # class predicted but never true counts (F1 = 0)
    assert M.macro_f1([0, 0], [0, 2], 3) == pytest.approx((2 / 3 + 0.0) / 2)
    assert math.isnan(M.macro_f1([], [], 3))


# --------------------------------------------------------------------------- #
# log loss
# --------------------------------------------------------------------------- #
def test_log_loss_hand():
    proba = [[0.5, 0.3, 0.2], [0.1, 0.8, 0.1]]
    assert M.log_loss([0, 1], proba) == pytest.approx(-(math.log(0.5) + math.log(0.8)) / 2)


def test_log_loss_clips_zero_probability():
    assert M.log_loss([2], [[0.5, 0.5, 0.0]]) == pytest.approx(-math.log(1e-12))
    assert M.log_loss([2], [[0.5, 0.5, 0.0]], eps=1e-6) == pytest.approx(-math.log(1e-6))


def test_log_loss_perfect_is_zero():
    assert M.log_loss([0, 2], np.eye(3)[[0, 2]]) == pytest.approx(0.0)


# --------------------------------------------------------------------------- #
# ROC
# --------------------------------------------------------------------------- #
def test_roc_curve_hand_with_ties():
    fpr, tpr, thr = M.roc_curve([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9])
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.5, 0.1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])


def test_roc_curve_no_negatives_fpr_nan():
    fpr, tpr, _ = M.roc_curve([1, 1], [0.2, 0.7])
    assert np.all(np.isnan(fpr))
    np.testing.assert_allclose(tpr, [0, 0.5, 1])


def test_roc_auc_hand_with_ties():
    # pos 0.5 vs neg {0.1: 1, 0.5: 1/2}; pos 0.9 vs both: 2 -> 3.5 / 4
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875)
    assert M.roc_auc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)
    assert M.roc_auc([0, 0, 1], [0.1, 0.2, 0.9]) == 1.0
    assert M.roc_auc([1, 1, 0], [0.1, 0.2, 0.9]) == 0.0
    assert M.roc_auc([False, True], [0.1, 0.2]) == 1.0


def test_roc_auc_one_class_absent_is_nan():
    assert math.isnan(M.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(M.roc_auc([0, 0], [0.1, 0.2]))


def test_roc_auc_equals_trapezoid_of_roc_curve():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 100)
    s = np.round(rng.random(100) + 0.3 * y, 1)  # coarse -> many ties
    fpr, tpr, _ = M.roc_curve(y, s)
    assert M.roc_auc(y, s) == pytest.approx(np.trapezoid(tpr, fpr))


# --------------------------------------------------------------------------- #
# predict_labels / threshold_for_recall
# --------------------------------------------------------------------------- #
PROBA = np.array([[0.5, 0.1, 0.4], [0.2, 0.5, 0.3], [0.7, 0.05, 0.25], [0.1, 0.3, 0.6]])


def test_predict_labels_argmax():
    np.testing.assert_array_equal(M.predict_labels(PROBA), [0, 1, 0, 2])


def test_predict_labels_threshold():
    # >= is inclusive (row 1: 0.3 >= 0.3); below threshold -> argmax of the others
    np.testing.assert_array_equal(M.predict_labels(PROBA, 0.3), [2, 2, 0, 2])
    np.testing.assert_array_equal(M.predict_labels(PROBA, 0.7), [0, 1, 0, 1])
    np.testing.assert_array_equal(M.predict_labels(PROBA, 0.3, positive=1), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="nan"):
        M.predict_labels(PROBA, nan)


def test_threshold_for_recall_hand():
    y = [1, 1, 1, 1, 0, 0]
    s = [0.9, 0.8, 0.7, 0.2, 0.5, 0.1]
    assert M.threshold_for_recall(y, s, 0.75) == 0.7   # 3/4 positives >= 0.7
    assert M.threshold_for_recall(y, s, 0.5) == 0.8
    assert M.threshold_for_recall(y, s, 1.0) == 0.2
    assert M.threshold_for_recall(y, s, 0.76) == 0.2


def test_threshold_for_recall_ties():
    # 4 positives, two tied at 0.8: recall(>=0.8) = 3/4
    assert M.threshold_for_recall([1, 1, 1, 1], [0.9, 0.8, 0.8, 0.1], 0.6) == 0.8


def test_threshold_for_recall_no_positives_nan():
    assert math.isnan(M.threshold_for_recall([0, 0, 0], [0.1, 0.5, 0.9], 0.95))


@pytest.mark.parametrize("target", [0.0, -0.1, 1.1])
def test_threshold_for_recall_bad_target(target):
    with pytest.raises(ValueError, match="target"):
        M.threshold_for_recall([1, 0], [0.5, 0.1], target)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 0.99, 1.0])
def test_threshold_for_recall_property(seed, target):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 150))
    y = rng.integers(0, 2, n)
    y[0] = 1
    s = np.round(rng.random(n) + 0.5 * y, 2)  # ties likely

    def recall(t):
        return M.malignant_metrics(y, (s >= t).astype(int), positive=1)["recall"]

    t = M.threshold_for_recall(y, s, target)
    assert recall(t) >= target
    higher = s[s > t]
    if higher.size:
        assert recall(higher.min()) < target


# --------------------------------------------------------------------------- #
# dice / iou
# --------------------------------------------------------------------------- #
def test_dice_iou_hand():
    pred = np.zeros((4, 4), bool)
    true = np.zeros((4, 4), bool)
    pred[0, :4] = True          # 4 pixels
    true[0, 2:] = True          # 4 pixels, overlap 2
    true[1, :2] = True
    d, i = M.dice_iou(pred, true)
    assert d == pytest.approx(2 * 2 / (4 + 4))
    assert i == pytest.approx(2 / 6)


def test_dice_iou_edge_cases():
    z = np.zeros((3, 3), bool)
    o = np.ones((3, 3), bool)
    assert M.dice_iou(z, z) == (1.0, 1.0)
    assert M.dice_iou(o, o) == (1.0, 1.0)
    assert M.dice_iou(z, o) == (0.0, 0.0)
    assert M.dice_iou(np.array([1, 0, 1]), np.array([1, 1, 0])) == pytest.approx((0.5, 1 / 3))


def test_dice_iou_validation():
    with pytest.raises(ValueError, match="shape"):
        M.dice_iou(np.zeros((2, 2), bool), np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="0/1"):
        M.dice_iou(np.array([0, 2]), np.array([0, 1]))


# --------------------------------------------------------------------------- #
# mean_ci
# --------------------------------------------------------------------------- #
def test_mean_ci_df4_known_t():
    mean, lo, hi = M.mean_ci([1, 2, 3, 4, 5])
    half = 2.776 * math.sqrt(2.5) / math.sqrt(5)
    assert mean == 3.0
    assert lo == pytest.approx(3 - half, abs=1e-3)
    assert hi == pytest.approx(3 + half, abs=1e-3)


@pytest.mark.parametrize("df,t", [(1, 12.706), (2, 4.303), (9, 2.262), (29, 2.045),
                                  (40, 2.021), (60, 2.000), (120, 1.980), (10**6, 1.960)])
def test_mean_ci_table_values(df, t):
    v = np.zeros(df + 1)
    v[0] = 1.0  # any non-constant sample: half-width / (sd / sqrt(n)) = t
    mean, lo, hi = M.mean_ci(v)
    se = v.std(ddof=1) / math.sqrt(v.size)
    assert (hi - mean) / se == pytest.approx(t, abs=1e-3)
    assert mean - lo == pytest.approx(hi - mean)


def test_mean_ci_matches_scipy_t():
    stats = pytest.importorskip("scipy.stats")
    for df in list(range(1, 200)) + [500, 5000]:
        assert M.t_critical_95(df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-4)


def test_t_critical_95_public_and_validated():
    assert M.t_critical_95(4) == pytest.approx(2.7764)
    assert M.t_critical_95(10**6) == pytest.approx(1.96, abs=1e-4)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="df"):
            M.t_critical_95(bad)


def test_mean_ci_nan_aware_and_small_n():
    assert M.mean_ci([1.0, nan, 3.0]) == pytest.approx(M.mean_ci([1.0, 3.0]))
    mean, lo, hi = M.mean_ci([1.0, 3.0])  # df=1: 12.706 * sqrt(2)/sqrt(2)
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - 12.7062, 2.0 + 12.7062))
    m1 = M.mean_ci([0.7, nan])
    assert m1[0] == 0.7 and math.isnan(m1[1]) and math.isnan(m1[2])
    assert all(math.isnan(x) for x in M.mean_ci([nan, nan]))
    assert M.mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_mean_ci_unsupported_confidence():
    with pytest.raises(ValueError, match="confidence"):
        M.mean_ci([1, 2, 3], confidence=0.9)


# --------------------------------------------------------------------------- #
# summarize
# --------------------------------------------------------------------------- #
def test_summarize_hand_and_json():
    y = [0, 1, 2, 2]
    s = M.summarize(y, PROBA)  # argmax -> [0, 1, 0, 2]
    assert json.loads(json.dumps(s)) == s
    assert s["n"] == 4 and s["accuracy"] == 0.75
    assert s["confusion"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert s["per_class_recall"] == {"normal": 1.0, "benign": 1.0, "malignant": 0.5}
    assert s["malignant"] == {"recall": 0.5, "mar": 0.5, "far": 0.0, "precision": 1.0,
                              "tp": 1, "fn": 1, "fp": 0, "tn": 2}
    # malignant scores: pos {0.25, 0.6} vs neg {0.4, 0.3} -> 2 of 4 pairs
    assert s["malignant_auc"] == pytest.approx(0.5)
    assert s["log_loss"] == pytest.approx(-np.mean(np.log([0.5, 0.5, 0.25, 0.6])))
    assert s["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert s["malignant_threshold"] is None
    for key in ("accuracy", "macro_f1", "log_loss", "malignant_auc"):
        assert type(s[key]) is float


def test_summarize_with_threshold():
    s = M.summarize([0, 1, 2, 2], PROBA, malignant_threshold=0.25)  # -> all 2
    assert s["malignant"]["recall"] == 1.0 and s["malignant"]["far"] == 1.0
    assert s["malignant_threshold"] == 0.25 and type(s["malignant_threshold"]) is float


def test_summarize_validation():
    with pytest.raises(ValueError, match="class_names"):
        M.summarize([0], [[0.5, 0.5, 0.0]], class_names=("a", "b"))
    with pytest.raises(ValueError, match="lengths"):
        M.summarize([0, 1], [[0.5, 0.5, 0.0]])


# --------------------------------------------------------------------------- #
# boundary validation
# --------------------------------------------------------------------------- #
def test_validation_errors():
    with pytest.raises(ValueError, match="lengths"):
        M.confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError, match="outside"):
        M.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="negative"):
        M.accuracy([0, -1], [0, 1])
    with pytest.raises(ValueError, match="integer"):
        M.accuracy([0, 1.5], [0, 1])
    with pytest.raises(ValueError, match="1-D"):
        M.accuracy([[0, 1]], [[0, 1]])
    with pytest.raises(ValueError, match="n_classes"):
        M.per_class_recall([0], [0], 0)
    with pytest.raises(ValueError, match="sum to 1"):
        M.log_loss([0], [[0.5, 0.6, 0.0]])
    with pytest.raises(ValueError, match="2-D"):
        M.predict_labels([0.2, 0.8])
    with pytest.raises(ValueError, match="outside"):
        M.log_loss([3], [[0.2, 0.3, 0.5]])
    with pytest.raises(ValueError, match="0/1"):
        M.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="lengths"):
        M.roc_curve([0, 1], [0.1])
    with pytest.raises(ValueError, match="finite"):
        M.roc_auc([0, 1], [0.1, nan])


# --------------------------------------------------------------------------- #
# agreement with scikit-learn (independent reference)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_sklearn_classification(seed):
    skm = pytest.importorskip("sklearn.metrics")
    y, proba = _random_case(seed)
    pred = M.predict_labels(proba)
    np.testing.assert_array_equal(M.confusion_matrix(y, pred, 3),
                                  skm.confusion_matrix(y, pred, labels=[0, 1, 2]))
    assert M.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    assert M.macro_f1(y, pred, 3) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    np.testing.assert_allclose(M.per_class_recall(y, pred, 3),
                               skm.recall_score(y, pred, average=None, labels=[0, 1, 2]))
    mm = M.malignant_metrics(y, pred)
    assert mm["recall"] == pytest.approx(skm.recall_score(y == 2, pred == 2))
    assert mm["precision"] == pytest.approx(skm.precision_score(y == 2, pred == 2))
    assert M.log_loss(y, proba) == pytest.approx(skm.log_loss(y, proba, labels=[0, 1, 2]),
                                                 rel=1e-9)


def test_macro_f1_agrees_with_sklearn_when_class_absent():
    skm = pytest.importorskip("sklearn.metrics")
    y, p = [0, 0, 1, 1, 0], [0, 1, 1, 1, 0]
    assert M.macro_f1(y, p, 3) == pytest.approx(skm.f1_score(y, p, average="macro"))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decimals", [1, 3, None])
def test_agrees_with_sklearn_roc(seed, decimals):
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 150)
    s = rng.random(150) + 0.4 * y
    if decimals is not None:
        s = np.round(s, decimals)
    assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s))
    fpr, tpr, thr = M.roc_curve(y, s)
    sfpr, stpr, sthr = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sfpr)
    np.testing.assert_allclose(tpr, stpr)
    np.testing.assert_array_equal(thr, sthr)


def test_summarize_auc_agrees_with_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    y, proba = _random_case(11)
    s = M.summarize(y, proba)
    assert s["malignant_auc"] == pytest.approx(skm.roc_auc_score(y == 2, proba[:, 2]))
    assert s["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=[0, 1, 2]))
