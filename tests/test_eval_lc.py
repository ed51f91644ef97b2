"""Length-controlled win rate: hand-derived fits, behaviour, and agreement with alpaca_eval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tpo.eval.lc import C_GRID, fit_l1_logistic, length_controlled_win_rate


def test_l1_logistic_with_a_constant_feature_by_hand():
    """One constant feature, soft labels p = (1, 1, 1, 0), mean 0.75, n = 4. The optimum of
    ||w||_1 + C * sum log-loss satisfies C * n * (q - 0.75) + sign(w) = 0, q = sigmoid(w):
    - C = 1e8: q = 0.75, w = log 3 = 1.0986;
    - C = 2: q = 0.75 - 1 / (2 * 4) = 0.625, w = log(0.625 / 0.375) = log(5 / 3) = 0.5108;
    - C = 1: the gradient at 0 is n * (0.5 - 0.75) = -1, inside [-1/C, 1/C]: w = 0."""
    X, p = np.ones((4, 1)), np.array([1.0, 1.0, 1.0, 0.0])
    assert fit_l1_logistic(X, p, 1e8)[0] == pytest.approx(math.log(3), abs=1e-6)
    assert fit_l1_logistic(X, p, 2.0)[0] == pytest.approx(math.log(5 / 3), abs=1e-9)
    assert fit_l1_logistic(X, p, 1.0)[0] == 0.0


def test_c_grid_is_alpaca_evals():
    assert len(C_GRID) == 10 and C_GRID[0] == pytest.approx(1e-4) and C_GRID[-1] == 1e4


def test_no_length_difference_leaves_the_win_rate():
    """Equal lengths: the length feature is 0 and LC = sigmoid(w_constant), which the fit puts
    at the mean preference (up to an L1 shrinkage of 1 / (C n) = 1e-6 at C = 1e4, n = 100)."""
    prefs = [1.0] * 60 + [0.0] * 30 + [0.5] * 10
    out = length_controlled_win_rate(prefs, [100] * 100, [100] * 100)
    assert out.win_rate == pytest.approx(0.65)
    assert out.lc_win_rate == pytest.approx(0.65, abs=1e-4)
    assert out.lc_se is None  # no instruction term: every prediction is the same


def test_length_bias_is_removed():
    """A judge that only likes length (true intercept 0): the longer model wins most raw
    comparisons, but the length-controlled win rate is back near one half."""
    rng = np.random.default_rng(0)
    n = 400
    model = rng.integers(300, 1500, n)
    base = rng.integers(100, 900, n)
    delta = model - base
    p_win = 1 / (1 + np.exp(-2.5 * np.tanh(delta / delta.std(ddof=1))))
    prefs = [float(x) for x in (rng.random(n) < p_win)]
    out = length_controlled_win_rate(prefs, model.tolist(), base.tolist())
    assert out.win_rate is not None and out.win_rate > 0.7  # 0.735 with this seed
    assert out.lc_win_rate == pytest.approx(0.5, abs=0.05)  # 0.485
    assert out.weights["length"] > 1.5


def test_failed_preferences_and_bad_input():
    out = length_controlled_win_rate([None, None], [1, 2], [1, 1])
    assert out.lc_win_rate is None
    with pytest.raises(ValueError, match="same length"):
        length_controlled_win_rate([1.0], [1, 2], [1])


def _synthetic(seed: int, n: int, noisy: bool):
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 1, n)
    model, base = rng.integers(100, 2000, n), rng.integers(100, 2000, n)
    if noisy:  # preferences unrelated to anything: cross-validation picks a small C
        prefs = [float(x) for x in rng.choice([0.0, 1.0, 0.5, 0.75], n, p=[0.45, 0.4, 0.1, 0.05])]
        return prefs, model, base, difficulty
    z = 0.8 * np.tanh((model - base) / np.std(model - base, ddof=1)) + 0.6 * difficulty - 0.3
    p = 1 / (1 + np.exp(-z))
    prefs_: list[float | None] = []
    for i in range(n):  # hard wins and losses, ties, soft preferences, failed judgments
        if i % 10 == 0:
            prefs_.append(None)
        elif i % 7 == 0:
            prefs_.append(0.5)
        elif i % 5 == 0:
            prefs_.append(float(np.round(p[i], 3)))
        else:
            prefs_.append(1.0 if rng.random() < p[i] else 0.0)
    return prefs_, model, base, difficulty


@pytest.mark.parametrize(
    ("seed", "n", "noisy", "glm"),
    [
        (0, 120, False, "length_controlled_noreg"),
        (0, 120, False, "length_controlled_minimal"),
        (2, 40, True, "length_controlled_noreg"),
    ],
)
def test_matches_alpaca_eval(tmp_path, monkeypatch, seed, n, noisy, glm):
    """Our LC win rate against `alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate`
    on the same synthetic annotations. alpaca_eval downloads its instruction difficulties from
    the Hugging Face hub; we hand it a local file with ours instead, so nothing is fetched."""
    pd = pytest.importorskip("pandas")
    glm_winrate = pytest.importorskip(
        "alpaca_eval.metrics.glm_winrate",
        reason="alpaca_eval not installed (pip install tpo[eval])",
    )
    sklearn = pytest.importorskip("sklearn")
    prefs, model, base, difficulty = _synthetic(seed, n, noisy)
    csv = tmp_path / "df_gamed.csv"
    pd.DataFrame(
        {"model": "m", "index": np.arange(n), "instruction_difficulty": difficulty}
    ).to_csv(csv, index=False)
    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **kwargs: str(csv))
    annotations = [
        {
            "preference": np.nan if p is None else 1.0 + p,  # alpaca_eval: 1 = baseline, 2 = model
            "output_1": "b" * int(base[i]),
            "output_2": "m" * int(model[i]),
            "generator_1": "baseline",
            "generator_2": "model",
            "annotator": "test",
        }
        for i, p in enumerate(prefs)
    ]
    try:
        theirs = glm_winrate.get_length_controlled_winrate(
            annotations, glm_name=glm, save_weights_dir=None, is_warn_extreme_changes=False
        )
    finally:
        sklearn.set_config(enable_metadata_routing=False)  # alpaca_eval turns it on globally
    ours = length_controlled_win_rate(
        prefs, model.tolist(), base.tolist(), difficulty.tolist() if "noreg" in glm else None
    )
    assert ours.win_rate is not None and ours.lc_win_rate is not None
    assert 100 * ours.win_rate == pytest.approx(theirs["win_rate"], abs=1e-9)
    assert 100 * ours.lc_win_rate == pytest.approx(theirs["length_controlled_winrate"], abs=0.01)
    if "noreg" in glm:
        assert ours.lc_se is not None
        assert 100 * ours.lc_se == pytest.approx(theirs["lc_standard_error"], abs=0.01)
    else:
        assert theirs["lc_standard_error"] == pytest.approx(0.0, abs=1e-9)  # why we give None
