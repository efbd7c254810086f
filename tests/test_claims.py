"""The claim rules of ``darcyvae reproduce`` (``darcyvae.experiments.claims``): each kind of
rule driven to every verdict with numbers whose answer is known, its prose, and every
rule the experiments declare."""

from __future__ import annotations

import importlib
import math
import pkgutil

import pytest
from darcyvae import experiments
from darcyvae.experiments.claims import (
    VERDICTS,
    Claim,
    ClaimRule,
    CountRule,
    Defined,
    Flag,
    FractionRule,
    HalfTrained,
    NoVerdict,
    Requires,
    Rule,
    Threshold,
    ThresholdRule,
    fraction_verdict,
    wilson,
)
from hypothesis import given
from hypothesis import strategies as st


def _trials(n_trained: int, n: int, n_over: int = 0) -> list[dict[str, bool]]:
    """``n`` trial records, the first ``n_trained`` beating the bound, the next ``n_over``
    over-regularised."""
    return [
        {"beats_bound": i < n_trained, "over_regularized": n_trained <= i < n_trained + n_over}
        for i in range(n)
    ]


TRAINED = _trials(2, 2)
UNTRAINED = _trials(0, 2)

# --------------------------------------------------------------------------- fractions


def test_wilson_interval_hand_computed():
    # k = 0 of 20: upper bound z^2 / (n + z^2)
    lo, hi = wilson(0, 20)
    assert lo == 0.0
    assert hi == pytest.approx(1.96**2 / (20 + 1.96**2))
    # k = 10 of 20: symmetric about 1/2, half width z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)
    lo, hi = wilson(10, 20)
    half = 1.96 * math.sqrt(0.25 / 20 + 1.96**2 / 1600) / (1 + 1.96**2 / 20)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half))


def test_fraction_verdicts():
    assert fraction_verdict(0, 20, 0.0) == "reproduced"
    assert fraction_verdict(2, 20, 0.1) == "reproduced"
    assert fraction_verdict(3, 20, 0.0) == "partly"  # 0.15 off, outside the interval
    assert fraction_verdict(10, 20, 0.0) == "not reproduced"
    assert fraction_verdict(10, 20, 0.5) == "reproduced"
    assert fraction_verdict(0, 0, 0.5) == "not judged"


@given(st.integers(0, 60), st.integers(1, 60))
def test_fraction_verdict_reproduces_its_own_fraction(k, n):
    k = min(k, n)
    lo, hi = wilson(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert fraction_verdict(k, n, k / n) == "reproduced"
    # a claim far outside the interval is never reproduced
    far = 0.0 if k / n > 0.5 else 1.0
    if not lo <= far <= hi:
        assert fraction_verdict(k, n, far) != "reproduced"


def test_fraction_rule_every_verdict_and_its_prose():
    rule = FractionRule(0.5, "trained trials", gates=(HalfTrained(),))
    assert wilson(34, 50)[0] > 0.5  # 0.68: outside the interval, 0.18 off
    assert wilson(4, 20)[1] < 0.5  # 0.2: outside, 0.3 off
    cases = {
        "reproduced": {"k": 10, "n": 20},
        "partly": {"k": 34, "n": 50},
        "not reproduced": {"k": 4, "n": 20},
    }
    for verdict, values in cases.items():
        assert rule.judge({**values, "trials": TRAINED}) == (verdict, None), verdict
    verdict, why = rule.judge({"k": 10, "n": 20, "trials": UNTRAINED, "subject": "HP"})
    assert verdict == "not judged"
    assert why == "HP: only 0 of 2 trials beat the Theorem-1 bound, too few to judge"
    assert rule.judge({"k": 0, "n": 0, "trials": TRAINED}) == ("not judged", "no trials to count")
    text = rule.text
    assert text.startswith("paper's fraction 0.5, over trained trials; ")
    assert "Wilson 95% interval" in text
    assert "|k/n - paper| <= 0.2" in text
    assert text.endswith("not judged unless at least half the trials beat the Theorem-1 bound")


def test_fraction_rule_counts_over_regularised_trials_as_converged():
    rule = FractionRule(0.1, "all trials", gates=(HalfTrained(count_over_regularized=True),))
    values = {"k": 2, "n": 20}
    # 0 trained, 1 of 2 over-regularised: half converged, judged
    assert rule.verdict({**values, "trials": _trials(0, 2, 1)}) == "reproduced"
    assert rule.verdict({**values, "trials": _trials(0, 3, 1)}) == "not judged"
    assert "or over-regularised" in rule.text
    # without the flag the over-regularised trial does not count
    plain = FractionRule(0.1, gates=(HalfTrained(),))
    assert plain.verdict({**values, "trials": _trials(0, 2, 1)}) == "not judged"


# --------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize(
    ("median", "verdict"),
    [
        (0.95, "reproduced"),
        (0.9, "reproduced"),
        (0.8, "partly"),
        (0.75, "partly"),
        (0.7, "not reproduced"),
        (None, "not reproduced"),
        (float("nan"), "not reproduced"),
    ],
)
def test_threshold_rule_larger_is_better(median, verdict):
    rule = ThresholdRule(
        "median_s_d", "the median S_D", ">=", 0.9, partly=0.75, gates=(HalfTrained(),)
    )
    assert rule.verdict({"median_s_d": median, "trials": TRAINED}) == verdict
    assert rule.verdict({"median_s_d": median, "trials": UNTRAINED}) == "not judged"


def test_threshold_rule_smaller_is_better_and_its_prose():
    rule = ThresholdRule("shift", "the largest shift", "<=", 0.05, partly=0.1)
    assert [rule.verdict({"shift": x}) for x in (0.0, 0.05, 0.07, 0.1, 0.2)] == [
        "reproduced",
        "reproduced",
        "partly",
        "partly",
        "not reproduced",
    ]
    assert rule.text == (
        "reproduced if the largest shift <= 0.05; partly if <= 0.1; else not reproduced"
    )
    gated = ThresholdRule(
        "shift",
        "the largest shift",
        "<=",
        0.05,
        gates=(Requires(Defined(("shift",), "a shift is measured"), failed="no shift"),),
    )
    assert gated.judge({"shift": None}) == ("not judged", "no shift")
    assert gated.verdict({"shift": 0.2}) == "not reproduced"  # no partly threshold
    assert gated.text.endswith("else not reproduced; not judged unless a shift is measured")


def test_threshold_rule_over_a_list_every_value_then_some_value():
    rule = ThresholdRule(
        "changes", "HP model's change", ">=", 0.05, partly=0.01, each=True, gates=(HalfTrained(),)
    )
    ok = {"trials": TRAINED}
    assert rule.verdict({"changes": [0.06, 0.5], **ok}) == "reproduced"
    assert rule.verdict({"changes": [0.06, 0.02], **ok}) == "partly"  # one misses 0.05
    assert rule.verdict({"changes": [0.005, 0.02], **ok}) == "partly"  # one reaches 0.01
    assert rule.verdict({"changes": [0.005, 0.001], **ok}) == "not reproduced"
    assert rule.verdict({"changes": [], **ok}) == "not reproduced"  # no model, no evidence
    assert rule.verdict({"changes": [0.5], "trials": UNTRAINED}) == "not judged"
    assert "every HP model's change >= 0.05" in rule.text
    assert "partly if any of them >= 0.01" in rule.text


def test_a_partly_threshold_stricter_than_reproduced_is_refused():
    with pytest.raises(ValueError, match="looser"):
        ThresholdRule("x", "x", ">=", 0.5, partly=0.9)
    with pytest.raises(ValueError, match="looser"):
        ThresholdRule("x", "x", "<=", 0.1, partly=0.05)
    with pytest.raises(ValueError, match="op must be"):
        Threshold("x", "=>", 1.0, "x")


# --------------------------------------------------------------------------- counts


def test_count_rule_every_verdict_and_its_prose():
    rule = CountRule(
        "directions stay above",
        0.95,
        partly=0.5,
        k="ok",
        n="all",
        gates=(Requires(Flag("trained", "the solution is trained"), failed="untrained"),),
    )
    ev = {"trained": True}
    assert rule.verdict({"ok": 95, "all": 100, **ev}) == "reproduced"  # exactly 95%
    assert rule.verdict({"ok": 94, "all": 100, **ev}) == "partly"
    assert rule.verdict({"ok": 50, "all": 100, **ev}) == "partly"  # exactly half
    assert rule.verdict({"ok": 49, "all": 100, **ev}) == "not reproduced"
    assert rule.judge({"ok": 100, "all": 100, "trained": False}) == ("not judged", "untrained")
    assert rule.judge({"ok": 0, "all": 0, **ev}) == ("not judged", "nothing to count")
    assert rule.text == (
        "reproduced if at least 95% of the directions stay above; partly if at least half; "
        "else not reproduced; not judged unless the solution is trained"
    )


def test_count_rule_all_or_any():
    rule = CountRule("trials beat the bound", 1.0, gates=(HalfTrained(),))
    assert rule.verdict({"k": 3, "n": 3, "trials": TRAINED}) == "reproduced"
    assert rule.verdict({"k": 1, "n": 3, "trials": TRAINED}) == "partly"
    assert rule.verdict({"k": 0, "n": 3, "trials": TRAINED}) == "not reproduced"
    assert rule.verdict({"k": 3, "n": 3, "trials": UNTRAINED}) == "not judged"
    assert rule.text.startswith("reproduced if all the trials beat the bound; partly if any;")


# --------------------------------------------------------------------------- conditions


def test_a_rule_of_conditions_every_verdict():
    rule = Rule(
        reproduced=Threshold("rho_r", "<=", -0.8, "rho(rate)")
        & Threshold("rho_d", ">=", 0.8, "rho(distortion)"),
        partly=Threshold("rho_r", "<=", -0.5, "rho(rate)")
        | Threshold("rho_d", ">=", 0.5, "rho(distortion)"),
        gates=(Requires(Defined(("rho_r", "rho_d"), "both are defined"), failed="undefined"),),
        note="Spearman correlations",
    )
    assert rule.verdict({"rho_r": -0.9, "rho_d": 0.9}) == "reproduced"
    assert rule.verdict({"rho_r": -0.9, "rho_d": 0.1}) == "partly"
    assert rule.verdict({"rho_r": 0.0, "rho_d": 0.6}) == "partly"
    assert rule.verdict({"rho_r": 0.0, "rho_d": 0.1}) == "not reproduced"
    assert rule.judge({"rho_r": None, "rho_d": 0.9}) == ("not judged", "undefined")
    assert rule.text == (
        "Spearman correlations; reproduced if rho(rate) <= -0.8 and rho(distortion) >= 0.8; "
        "partly if rho(rate) <= -0.5 or rho(distortion) >= 0.5; else not reproduced; "
        "not judged unless both are defined"
    )


def test_flags_and_a_rule_without_partly():
    rule = Rule(
        Flag("plain_or", "the plain run over-regularises")
        & Flag("method_or", "the method does not", expected=False),
        partly=Flag("method_or", "only the latter", expected=False),
    )
    assert rule.verdict({"plain_or": True, "method_or": False}) == "reproduced"
    assert rule.verdict({"plain_or": False, "method_or": False}) == "partly"
    assert rule.verdict({"plain_or": True, "method_or": True}) == "not reproduced"
    assert rule.verdict({"plain_or": True, "method_or": None}) == "not reproduced"
    grows = Rule(Flag("grows", "it grows"))
    assert grows.verdict({"grows": True}) == "reproduced"
    assert grows.verdict({"grows": False}) == "not reproduced"
    assert grows.text == "reproduced if it grows; else not reproduced"


def test_no_verdict_is_never_judged_and_states_why():
    rule = NoVerdict("our own question")
    assert rule.judge({"p_value": 0.01}) == ("not judged", None)
    assert rule.text == "our own question"


def test_a_claim_row_appends_the_gate_reason_and_stores_only_its_values():
    claim = Claim(
        "x", "the paper says so", ThresholdRule("m", "m", ">=", 1.0, gates=(HalfTrained(),))
    )
    row = claim.judge("m = 2", {"m": 2.0}, trials=UNTRAINED, subject="arm")
    assert row == {
        "id": "x",
        "claim": "the paper says so",
        "measured": "m = 2; arm: only 0 of 2 trials beat the Theorem-1 bound, too few to judge",
        "verdict": "not judged",
        "rule": claim.rule.text,
        "values": {"m": 2.0},
    }
    assert claim.judge("m = 2", {"m": 2.0}, trials=TRAINED)["measured"] == "m = 2"
    with pytest.raises(KeyError, match="trial records"):
        claim.judge("m = 2", {"m": 2.0})


# --------------------------------------------------------------------------- the experiments' rules


def _declared() -> dict[str, ClaimRule]:
    """Every rule an experiment module declares at module level (as a rule or a Claim)."""
    found = {}
    for info in pkgutil.iter_modules(experiments.__path__):
        mod = importlib.import_module(f"{experiments.__name__}.{info.name}")
        for name, obj in vars(mod).items():
            if isinstance(obj, Claim):
                found[f"{info.name}.{name}"] = obj.rule
            elif isinstance(obj, ClaimRule):
                found[f"{info.name}.{name}"] = obj
    return found


ok, no = {"trials": TRAINED}, {"trials": UNTRAINED}
DECLARED_CASES = {
    # rule: [(values, verdict)], with numbers where the answer is known
    "basic.KLE_DETAIL": [({"grows": True}, "reproduced"), ({"grows": False}, "not reproduced")],
    "landscape.VALLEY": [
        ({"lines_with_valley": 5, "lines": 10, "trained": True}, "reproduced"),
        ({"lines_with_valley": 1, "lines": 10, "trained": True}, "partly"),
        ({"lines_with_valley": 0, "lines": 10, "trained": True}, "not reproduced"),
        ({"lines_with_valley": 10, "lines": 10, "trained": False}, "not judged"),
    ],
    "landscape.NO_LOCAL_MINIMUM": [
        ({"directions_never_lower": 100, "directions": 100, "trained": True}, "reproduced"),
        ({"directions_never_lower": 60, "directions": 100, "trained": True}, "partly"),
        ({"directions_never_lower": 10, "directions": 100, "trained": True}, "not reproduced"),
        ({"directions_never_lower": 100, "directions": 100, "trained": False}, "not judged"),
    ],
    "rd_plane.TRAJECTORIES": [
        (
            {
                "plain_over_regularized": True,
                "method_over_regularized": False,
                "method_trained": True,
            },
            "reproduced",
        ),
        (
            {
                "plain_over_regularized": False,
                "method_over_regularized": False,
                "method_trained": True,
            },
            "partly",
        ),
        (
            {
                "plain_over_regularized": True,
                "method_over_regularized": True,
                "method_trained": True,
            },
            "not reproduced",
        ),
        (
            {
                "plain_over_regularized": True,
                "method_over_regularized": False,
                "method_trained": False,
            },
            "not judged",
        ),
    ],
    "rd_plane.BETA_SWEEP": [
        ({"spearman_rate": -1.0, "spearman_distortion": 0.95, **ok}, "reproduced"),
        ({"spearman_rate": -0.6, "spearman_distortion": 0.2, **ok}, "partly"),
        ({"spearman_rate": 0.3, "spearman_distortion": 0.2, **ok}, "not reproduced"),
        ({"spearman_rate": -1.0, "spearman_distortion": 0.95, **no}, "not judged"),
        ({"spearman_rate": None, "spearman_distortion": 0.95, **ok}, "not judged"),
    ],
    "interpolate.SAME_LOSS_DIFFERENT_SD": [
        (
            {"loss_difference_per_element": 0.01, "s_d_difference": 0.3, "both_trained": True},
            "reproduced",
        ),
        (
            {"loss_difference_per_element": 0.01, "s_d_difference": 0.05, "both_trained": True},
            "partly",
        ),
        (
            {"loss_difference_per_element": 0.2, "s_d_difference": 0.3, "both_trained": True},
            "not reproduced",
        ),
        (
            {"loss_difference_per_element": 0.01, "s_d_difference": 0.3, "both_trained": False},
            "not judged",
        ),
    ],
    "studies.RECONSTRUCTION": [
        ({"n_trained": 3, "n": 3}, "reproduced"),
        ({"n_trained": 1, "n": 3}, "partly"),
        ({"n_trained": 0, "n": 3}, "not reproduced"),
        ({"n_trained": 0, "n": 0}, "not judged"),
    ],
    "studies.NEAR_PERFECT": [
        ({"median_s_d": 0.93, **ok}, "reproduced"),
        ({"median_s_d": 0.8, **ok}, "partly"),
        ({"median_s_d": 0.6, **ok}, "not reproduced"),
        ({"median_s_d": 0.93, **no}, "not judged"),
    ],
    "studies.NO_HP_NEVER": [
        ({"k": 0, "n": 20, **ok}, "reproduced"),
        ({"k": 3, "n": 20, **ok}, "partly"),
        ({"k": 10, "n": 20, **ok}, "not reproduced"),
        ({"k": 0, "n": 20, **no}, "not judged"),
    ],
    "studies.HP_GOOD": [
        ({"k": 10, "n": 20, **ok}, "reproduced"),
        ({"k": 2, "n": 20, **ok}, "partly"),
        ({"k": 0, "n": 20, **ok}, "not reproduced"),
        ({"k": 10, "n": 20, **no}, "not judged"),
    ],
    "studies.NO_HP_OR": [
        ({"k": 2, "n": 20, **ok}, "reproduced"),
        ({"k": 0, "n": 50, **ok}, "partly"),  # [0, 0.071]: 0.1 outside, 0.1 off
        ({"k": 10, "n": 20, **ok}, "not reproduced"),
        ({"k": 2, "n": 20, "trials": _trials(0, 4, 1)}, "not judged"),
    ],
    "studies.NO_HP_NONE": [
        ({"k": 0, "n": 20, **ok}, "reproduced"),
        ({"k": 3, "n": 20, **ok}, "partly"),
        ({"k": 10, "n": 20, **ok}, "not reproduced"),
        ({"k": 0, "n": 0, **ok}, "not judged"),
    ],
    "studies.HP_NO_OR": [
        ({"k": 0, "n": 20, **ok}, "reproduced"),
        ({"k": 3, "n": 20, **ok}, "partly"),
        ({"k": 10, "n": 20, **ok}, "not reproduced"),
        ({"k": 0, "n": 20, **no}, "not judged"),
    ],
    "studies.HP_HALF": [
        ({"k": 10, "n": 20, **ok}, "reproduced"),
        ({"k": 34, "n": 50, **ok}, "partly"),
        ({"k": 3, "n": 20, **ok}, "not reproduced"),
        ({"k": 10, "n": 20, **no}, "not judged"),
    ],
    "studies.HP_ROTATED": [
        ({"k": 10, "n": 10, **ok}, "reproduced"),
        ({"k": 16, "n": 20, **ok}, "partly"),
        ({"k": 5, "n": 17, **ok}, "not reproduced"),
        ({"k": 0, "n": 0, **ok}, "not judged"),
    ],
    "studies.DECODER_MATTERS": [({"p_value": 0.001}, "not judged")],
    "rotation.STD_NORMAL_INVARIANT": [
        ({"max_relative_change": 2e-7, **ok}, "reproduced"),
        ({"max_relative_change": 0.01, **ok}, "not reproduced"),
        ({"max_relative_change": 2e-7, **no}, "not judged"),
    ],
    "rotation.HP_CHANGES": [
        ({"relative_changes": [2.3, 11.4, 0.47], **ok}, "reproduced"),
        ({"relative_changes": [2.3, 0.02], **ok}, "partly"),
        ({"relative_changes": [0.001, 0.002], **ok}, "not reproduced"),
        ({"relative_changes": [2.3], **no}, "not judged"),
    ],
    "semisupervised.ONE_PERCENT": [
        ({"min_s_d": [0.91, 0.95], "mean_s_d": [0.93, 0.96], **ok}, "reproduced"),
        ({"min_s_d": [0.86, 0.9], "mean_s_d": [0.877, 0.931], **ok}, "partly"),
        ({"min_s_d": [0.5, 0.6], "mean_s_d": [0.7, 0.8], **ok}, "not reproduced"),
        ({"min_s_d": [0.91], "mean_s_d": [0.93], **no}, "not judged"),
    ],
    "semisupervised.NEARLY_IDENTICAL": [
        ({"s_d_ranges": [0.005, 0.004], "min_s_d": [0.959, 0.953], **ok}, "reproduced"),
        ({"s_d_ranges": [0.08, 0.004], "min_s_d": [0.91, 0.953], **ok}, "partly"),
        ({"s_d_ranges": [0.005, 0.3], "min_s_d": [0.959, 0.6], **ok}, "not reproduced"),
        ({"s_d_ranges": [0.005], "min_s_d": [0.959], **no}, "not judged"),
    ],
    "semisupervised.LOSSES_UNAFFECTED": [
        ({"max_shift_per_element": 0.01, **ok}, "reproduced"),
        ({"max_shift_per_element": 0.08, **ok}, "partly"),
        ({"max_shift_per_element": 0.7, **ok}, "not reproduced"),
        ({"max_shift_per_element": None, **ok}, "not judged"),
        ({"max_shift_per_element": 0.01, **no}, "not judged"),
    ],
    "skl.SKL_TRACKS": [
        (
            {"medians_ordered": True, "spearman": -0.7, "n_disentangled": 3, "n_other": 5},
            "reproduced",
        ),
        (
            {"medians_ordered": True, "spearman": -0.1, "n_disentangled": 29, "n_other": 103},
            "partly",
        ),
        (
            {"medians_ordered": False, "spearman": -0.7, "n_disentangled": 3, "n_other": 5},
            "not reproduced",
        ),
        (
            {"medians_ordered": True, "spearman": -0.7, "n_disentangled": 2, "n_other": 5},
            "not judged",
        ),
    ],
    "sensitivity.ROBUST": [({"verdicts": {}, "robust": False}, "not judged")],
}


def _reachable(rule: ClaimRule) -> set[str]:
    """The verdicts a rule can give."""
    if isinstance(rule, NoVerdict):
        return {"not judged"}
    out = {"reproduced", "not reproduced"}
    if rule._conditions()[1] is not None:
        out.add("partly")
    if rule._gates():
        out.add("not judged")
    return out


def test_every_declared_rule_is_driven_to_each_of_its_verdicts():
    declared = _declared()
    assert set(declared) == set(DECLARED_CASES)  # a new rule needs its cases here
    for name, rule in declared.items():
        cases = DECLARED_CASES[name]
        for values, verdict in cases:
            assert rule.verdict(values) == verdict, (name, values)
        assert {v for _, v in cases} == _reachable(rule), name
        assert _reachable(rule) <= set(VERDICTS)


@pytest.mark.parametrize("name", sorted(DECLARED_CASES))
def test_every_declared_rule_states_its_thresholds(name):
    rule = _declared()[name]
    text = rule.text
    assert text
    numbers = []
    if isinstance(rule, ThresholdRule):
        numbers = [rule.reproduced, rule.partly]
    elif isinstance(rule, FractionRule):
        numbers = [rule.claimed, rule.tolerance]
    elif isinstance(rule, Rule):
        conds = [c for c in rule._conditions() if c is not None]
        while any(hasattr(c, "parts") for c in conds):
            conds = [p for c in conds for p in getattr(c, "parts", (c,))]
        numbers = [c.value for c in conds if isinstance(c, Threshold)]
    for x in numbers:
        if x is not None:
            assert f"{x:g}" in text, (name, x, text)
    if isinstance(rule, CountRule):
        assert rule.label in text
    if not isinstance(rule, NoVerdict):
        assert "reproduced if " in text
        assert "else not reproduced" in text
        for gate in getattr(rule, "gates", ()):
            assert f"not judged unless {gate.text}" in text or f" and {gate.text}" in text
