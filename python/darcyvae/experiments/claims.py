"""Claim rules: how a report turns measured numbers into a verdict (docs/reproduction.md §6).

A paper's claim is a ``Claim``: an id, the claim in words and a rule. A rule
holds its statistic, its thresholds and its gate; it computes the verdict
(``reproduced``, ``partly``, ``not reproduced`` or ``not judged``) from the
measured values and writes its own prose for the report's "rule" column, so
the number a verdict is judged by and the sentence that states it are written
once, in one object.

The kinds of rule the experiments need:

``ThresholdRule``
    A statistic against a "reproduced" and a "partly" threshold in one
    direction (or, for a list of values, every value against the first and
    some value against the second).
``CountRule``
    k of n things show a property: reproduced when the share reaches one
    fraction, partly when it reaches another (or when any does).
``FractionRule``
    The paper states a fraction of trials; reproduced when it lies in the
    Wilson 95% interval of the measured k/n, partly when within 0.2.
``Rule``
    Any other combination of conditions (``Threshold``, ``Flag``, ``Share``,
    ``Defined``, joined with ``&`` and ``|``).
``NoVerdict``
    Our own question, not a claim of the paper's: always "not judged".

Each rule may carry gates (``HalfTrained``, ``Requires``): while a gate
holds, the verdict is "not judged" and the gate's reason is appended to the
measured value. A rule is judged on a mapping of named values: the ones
stored with the claim in ``results.json`` and any further evidence the gate
or the conditions read (e.g. ``trials``, the trial records of ``HalfTrained``).

This module is private to ``darcyvae.experiments``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

__all__ = [
    "FRACTION_RULE",
    "VERDICTS",
    "Claim",
    "ClaimRule",
    "Condition",
    "CountRule",
    "Defined",
    "Flag",
    "FractionRule",
    "Gate",
    "HalfTrained",
    "NoVerdict",
    "Requires",
    "Rule",
    "Share",
    "Threshold",
    "ThresholdRule",
    "claim_row",
    "fraction_verdict",
    "judge_gate",
    "wilson",
]

VERDICTS = ("reproduced", "partly", "not reproduced", "not judged")

_OPS = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
}


def _num(value: float) -> str:
    return f"{value:g}"


def _number(value: Any) -> float | None:
    """``value`` as a float, None when it is missing or not a finite-or-infinite number."""
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


# --------------------------------------------------------------------------- fractions


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval of a binomial fraction k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)  # exact ends (rounding gave 1 - 1e-16)
    return (lo, hi)


FRACTION_TOLERANCE = 0.2
"""|k/n - paper| within which a claimed fraction is "partly" reproduced."""

FRACTION_RULE = (
    "reproduced if the paper's fraction lies in the Wilson 95% interval of k/n; partly if "
    f"|k/n - paper| <= {FRACTION_TOLERANCE:g}; else not reproduced"
)


def fraction_verdict(k: int, n: int, claimed: float) -> str:
    """Verdict of a claimed fraction against k successes in n trials (``FRACTION_RULE``)."""
    return FractionRule(claimed).verdict({"k": k, "n": n})


# --------------------------------------------------------------------------- conditions


class Condition:
    """A test on the measured values: ``holds(values)`` and its prose ``text``.

    Conditions join with ``&`` (``AllOf``) and ``|`` (``AnyOf``). A value that is
    missing, None or NaN never passes a test.
    """

    text: str

    def holds(self, values: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def __and__(self, other: Condition) -> AllOf:
        return AllOf((self, other))

    def __or__(self, other: Condition) -> AnyOf:
        return AnyOf((self, other))


@dataclass(frozen=True)
class Threshold(Condition):
    """``values[stat] op value``; for a list statistic, ``over`` says whether every value
    (``"every"``) or some value (``"some"``) must pass (an empty list passes neither)."""

    stat: str
    op: str
    value: float
    label: str
    over: str | None = None

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            msg = f"Threshold: op must be one of {sorted(_OPS)}; got {self.op!r}."
            raise ValueError(msg)
        if self.over not in (None, "every", "some"):
            msg = f"Threshold: over must be None, 'every' or 'some'; got {self.over!r}."
            raise ValueError(msg)

    def _passes(self, x: Any) -> bool:
        x = _number(x)
        return x is not None and _OPS[self.op](x, self.value)

    def holds(self, values: Mapping[str, Any]) -> bool:
        v = values.get(self.stat)
        if self.over is None:
            return self._passes(v)
        items = list(v or [])
        if not items:
            return False
        test = all if self.over == "every" else any
        return test(self._passes(x) for x in items)

    @property
    def text(self) -> str:
        if not self.label:  # the statistic named just before ("partly if >= 0.75")
            head = {"every": "all of them ", "some": "any of them "}.get(self.over or "", "")
            return f"{head}{self.op} {_num(self.value)}"
        head = f"{self.over} " if self.over else ""
        return f"{head}{self.label} {self.op} {_num(self.value)}"


@dataclass(frozen=True)
class Flag(Condition):
    """``values[stat]`` is ``expected`` (a yes/no statistic); ``label`` says it in words."""

    stat: str
    label: str
    expected: bool = True

    def holds(self, values: Mapping[str, Any]) -> bool:
        v = values.get(self.stat)
        return v is not None and bool(v) == self.expected

    @property
    def text(self) -> str:
        return self.label


@dataclass(frozen=True)
class Defined(Condition):
    """Every statistic in ``stats`` has a value (not missing, None or NaN)."""

    stats: tuple[str, ...]
    label: str

    def holds(self, values: Mapping[str, Any]) -> bool:
        return all(_number(values.get(s)) is not None for s in self.stats)

    @property
    def text(self) -> str:
        return self.label


def _share_words(fraction: float | None, label: str) -> str:
    if fraction is None:
        words = "any"
    elif fraction == 1:
        words = "all"
    elif fraction == 0.5:
        words = "at least half"
    else:
        words = f"at least {_num(100 * fraction)}%"
    if not label:
        return words
    return f"{words} {'of ' if words[-1] == '%' else ''}the {label}"


@dataclass(frozen=True)
class Share(Condition):
    """``values[k]`` of ``values[n]`` things reach ``at_least`` of them (exactly, as a
    fraction); ``at_least=None``: at least one does. Never holds for n = 0."""

    k: str
    n: str
    at_least: float | None
    label: str

    def holds(self, values: Mapping[str, Any]) -> bool:
        k, n = values.get(self.k), values.get(self.n)
        if k is None or not n:
            return False
        if self.at_least is None:
            return k >= 1
        return Fraction(int(k), int(n)) >= Fraction(repr(float(self.at_least)))

    @property
    def text(self) -> str:
        return _share_words(self.at_least, self.label)


@dataclass(frozen=True)
class _InWilson(Condition):
    k: str
    n: str
    claimed: float

    def holds(self, values: Mapping[str, Any]) -> bool:
        n = int(values.get(self.n) or 0)
        if n == 0:
            return False
        lo, hi = wilson(int(values[self.k]), n)
        return lo <= self.claimed <= hi

    text = "the paper's fraction lies in the Wilson 95% interval of k/n"


@dataclass(frozen=True)
class _Near(Condition):
    k: str
    n: str
    claimed: float
    tolerance: float

    def holds(self, values: Mapping[str, Any]) -> bool:
        n = int(values.get(self.n) or 0)
        return n > 0 and abs(int(values[self.k]) / n - self.claimed) <= self.tolerance

    @property
    def text(self) -> str:
        return f"|k/n - paper| <= {_num(self.tolerance)}"


@dataclass(frozen=True)
class AllOf(Condition):
    """Every part holds."""

    parts: tuple[Condition, ...]

    def holds(self, values: Mapping[str, Any]) -> bool:
        return all(p.holds(values) for p in self.parts)

    @property
    def text(self) -> str:
        return " and ".join(p.text for p in self.parts)


@dataclass(frozen=True)
class AnyOf(Condition):
    """At least one part holds."""

    parts: tuple[Condition, ...]

    def holds(self, values: Mapping[str, Any]) -> bool:
        return any(p.holds(values) for p in self.parts)

    @property
    def text(self) -> str:
        return " or ".join(p.text for p in self.parts)


# --------------------------------------------------------------------------- gates


class Gate:
    """A reason to hold a verdict back: ``reason(values)`` (None: judge), and ``text``,
    the condition under which the claim is judged ("not judged unless <text>")."""

    text: str

    def reason(self, values: Mapping[str, Any]) -> str | None:
        raise NotImplementedError


def judge_gate(
    records: Sequence[Mapping[str, Any]],
    what: str | None,
    *,
    count_over_regularized: bool = False,
) -> str | None:
    """A reason not to judge a claim, or None when at least half the trials are trained.

    With ``count_over_regularized`` an over-regularised trial counts as
    converged too (it sits at the Theorem-1 optimum; claims that count
    over-regularisation are judged on those).
    """
    head = f"{what}: " if what else ""
    if not records:
        return f"{head}no trials"
    n_ok = sum(
        bool(r["beats_bound"] or (count_over_regularized and r["over_regularized"]))
        for r in records
    )
    if 2 * n_ok < len(records):
        kind = (
            "beat the Theorem-1 bound or over-regularised"
            if count_over_regularized
            else "beat the Theorem-1 bound"
        )
        return f"{head}only {n_ok} of {len(records)} trials {kind}, too few to judge"
    return None


@dataclass(frozen=True)
class HalfTrained(Gate):
    """Judge only when at least half the trials beat the Theorem-1 bound (docs/model.md
    §4e); with ``count_over_regularized`` an over-regularised trial counts as well.

    Reads the trial records from ``values[trials]`` and names ``values[subject]`` (an
    arm, an experiment) in its reason.
    """

    count_over_regularized: bool = False
    trials: str = "trials"
    subject: str = "subject"

    def reason(self, values: Mapping[str, Any]) -> str | None:
        if self.trials not in values:
            msg = f"HalfTrained: the claim was judged without its trial records ({self.trials!r})."
            raise KeyError(msg)
        return judge_gate(
            values[self.trials],
            values.get(self.subject),
            count_over_regularized=self.count_over_regularized,
        )

    @property
    def text(self) -> str:
        extra = " or over-regularised" if self.count_over_regularized else ""
        return f"at least half the trials beat the Theorem-1 bound{extra}"


@dataclass(frozen=True)
class Requires(Gate):
    """Judge only when ``condition`` holds; ``failed`` is the reason stated otherwise and
    ``label`` (default: the condition's prose) the prose of the gate."""

    condition: Condition
    failed: str
    label: str | None = None

    def reason(self, values: Mapping[str, Any]) -> str | None:
        return None if self.condition.holds(values) else self.failed

    @property
    def text(self) -> str:
        return self.label or self.condition.text


# --------------------------------------------------------------------------- rules


def claim_row(
    cid: str,
    text: str,
    measured: str,
    verdict: str,
    rule: str,
    values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One row of a report: the paper's claim, our number, the verdict and its rule."""
    if verdict not in VERDICTS:
        msg = f"claim: verdict must be one of {VERDICTS}; got {verdict!r}."
        raise ValueError(msg)
    return {
        "id": cid,
        "claim": text,
        "measured": measured,
        "verdict": verdict,
        "rule": rule,
        "values": values or {},
    }


class ClaimRule:
    """What every rule does: ``judge`` (verdict and reason), ``verdict``, ``text`` (the
    report's prose) and ``claim`` (the report row). A subclass gives its conditions
    (``_conditions``), gates (``_gates``) and an optional ``note`` (definitions stated
    before the rule)."""

    note: str = ""

    def _conditions(self) -> tuple[Condition, Condition | None]:
        raise NotImplementedError

    def _gates(self) -> tuple[Gate, ...]:
        """The gates the verdict checks: the declared ones (``gates``, stated in the prose)
        and any the kind implies (nothing to count)."""
        return tuple(getattr(self, "gates", ()) or ())

    def judge(self, values: Mapping[str, Any]) -> tuple[str, str | None]:
        """``(verdict, reason)``: the reason of the first gate that holds the verdict back
        ("not judged"), else None."""
        for gate in self._gates():
            why = gate.reason(values)
            if why:
                return "not judged", why
        reproduced, partly = self._conditions()
        if reproduced.holds(values):
            return "reproduced", None
        if partly is not None and partly.holds(values):
            return "partly", None
        return "not reproduced", None

    def verdict(self, values: Mapping[str, Any]) -> str:
        """The verdict on ``values`` (see ``judge``)."""
        return self.judge(values)[0]

    @property
    def text(self) -> str:
        """The rule in words: the note, the reproduced and partly conditions, the gates."""
        reproduced, partly = self._conditions()
        parts = [self.note] if self.note else []
        parts.append(f"reproduced if {reproduced.text}")
        if partly is not None:
            parts.append(f"partly if {partly.text}")
        parts.append("else not reproduced")
        gates = tuple(getattr(self, "gates", ()) or ())
        if gates:
            parts.append("not judged unless " + " and ".join(g.text for g in gates))
        return "; ".join(parts)

    def claim(
        self,
        cid: str,
        text: str,
        measured: str,
        values: dict[str, Any] | None = None,
        **evidence: Any,
    ) -> dict[str, Any]:
        """The report row of a claim judged by this rule.

        ``values`` are stored with the claim (results.json); ``evidence`` is what
        the rule reads besides them (e.g. ``trials`` and ``subject`` of
        ``HalfTrained``) and is not stored. A gate's reason is appended to
        ``measured``.
        """
        verdict, why = self.judge({**(values or {}), **evidence})
        if why:
            measured = f"{measured}; {why}"
        return claim_row(cid, text, measured, verdict, self.text, values)


@dataclass(frozen=True)
class Rule(ClaimRule):
    """A rule of any conditions: reproduced if ``reproduced`` holds, else partly if
    ``partly`` holds, else not reproduced; not judged while a gate holds."""

    reproduced: Condition
    partly: Condition | None = None
    gates: tuple[Gate, ...] = ()
    note: str = ""

    def _conditions(self) -> tuple[Condition, Condition | None]:
        return self.reproduced, self.partly


@dataclass(frozen=True)
class ThresholdRule(ClaimRule):
    """A statistic against thresholds in one direction.

    Reproduced if ``values[statistic] op reproduced``, partly if ``op partly``
    (``op`` is the direction: ``">="`` when larger is better, ``"<="`` when
    smaller is). With ``each`` the statistic is a list (one value per model):
    reproduced if every value passes ``reproduced``, partly if some value passes
    ``partly``. ``label`` names the statistic in the prose.
    """

    statistic: str
    label: str
    op: str
    reproduced: float
    partly: float | None = None
    each: bool = False
    gates: tuple[Gate, ...] = ()
    note: str = ""

    def __post_init__(self) -> None:
        if (
            self.partly is not None
            and self.partly != self.reproduced
            and (_OPS[self.op](self.partly, self.reproduced))
        ):
            msg = (
                f"ThresholdRule {self.statistic!r}: the partly threshold {self.partly} must be "
                f"looser than the reproduced one {self.reproduced} (direction {self.op})."
            )
            raise ValueError(msg)

    def _conditions(self) -> tuple[Condition, Condition | None]:
        rep = Threshold(
            self.statistic, self.op, self.reproduced, self.label, "every" if self.each else None
        )
        if self.partly is None:
            return rep, None
        part = Threshold(self.statistic, self.op, self.partly, "", "some" if self.each else None)
        return rep, part


@dataclass(frozen=True)
class CountRule(ClaimRule):
    """``values[k]`` of ``values[n]`` things show a property (``label``, e.g. "lines pass
    an over-regularised point"): reproduced if at least ``reproduced`` of them do (a
    fraction, compared exactly), partly if at least ``partly`` do (None: any). Not
    judged when there is nothing to count (n = 0)."""

    label: str
    reproduced: float
    partly: float | None = None
    k: str = "k"
    n: str = "n"
    gates: tuple[Gate, ...] = ()
    note: str = ""

    def _conditions(self) -> tuple[Condition, Condition | None]:
        return (
            Share(self.k, self.n, self.reproduced, self.label),
            Share(self.k, self.n, self.partly, ""),
        )

    def _gates(self) -> tuple[Gate, ...]:
        nothing = Requires(Threshold(self.n, ">", 0, self.n), failed="nothing to count")
        return (*self.gates, nothing)


@dataclass(frozen=True)
class FractionRule(ClaimRule):
    """The paper's fraction ``claimed`` of the trials ``over`` which k of n are counted:
    reproduced if it lies in the Wilson 95% interval of k/n, partly if
    |k/n - claimed| <= ``tolerance``. Not judged when n = 0."""

    claimed: float
    over: str = ""
    k: str = "k"
    n: str = "n"
    tolerance: float = FRACTION_TOLERANCE
    gates: tuple[Gate, ...] = ()
    definition: str = ""

    @property
    def note(self) -> str:  # type: ignore[override]
        head = f"{self.definition}; " if self.definition else ""
        over = f", over {self.over}" if self.over else ""
        return f"{head}paper's fraction {_num(self.claimed)}{over}"

    def _conditions(self) -> tuple[Condition, Condition | None]:
        return (
            _InWilson(self.k, self.n, self.claimed),
            _Near(self.k, self.n, self.claimed, self.tolerance),
        )

    def _gates(self) -> tuple[Gate, ...]:
        nothing = Requires(Threshold(self.n, ">", 0, self.n), failed="no trials to count")
        return (*self.gates, nothing)


@dataclass(frozen=True)
class NoVerdict(ClaimRule):
    """Our own question beside the paper's claims: always "not judged"; ``why`` is the
    prose of the report's rule column."""

    why: str

    def judge(self, values: Mapping[str, Any]) -> tuple[str, str | None]:
        return "not judged", None

    @property
    def text(self) -> str:
        return self.why


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as an experiment declares it: ``id`` (stable across runs,
    used by ``--compare``), the claim in words and the ``ClaimRule`` that judges it."""

    id: str
    text: str
    rule: ClaimRule

    def judge(
        self, measured: str, values: dict[str, Any] | None = None, **evidence: Any
    ) -> dict[str, Any]:
        """The report row: ``measured`` (the numbers in words), the verdict of ``rule`` on
        ``values`` (stored) and ``evidence`` (read, not stored), and the rule's prose."""
        return self.rule.claim(self.id, self.text, measured, values, **evidence)
