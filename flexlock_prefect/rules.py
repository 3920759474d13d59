"""Promotion metric rules: read strictly, checked in decimal arithmetic.

A rule is `metric OP number` (`accuracy >= 0.9`) or `metric OP alias.metric [± margin]`
(`accuracy >= prod.accuracy - 0.01`, `loss <= staging.loss`), with OP one of `>=`, `<=`, `>`,
`<`, `==`. The alias must be a lifecycle state; anything else (a misspelt alias, arithmetic on
plain numbers) is a LifecycleError naming the rule, never a rule silently skipped. Values are
compared as the decimals they print as, so a candidate exactly on `holder - margin` passes.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from flexlock_prefect.exceptions import LifecycleError
from flexlock_prefect.lock import RunLock
from flexlock_prefect.tracking.lifecycle import STATES

HINT = "write `metric >= 0.9` or `metric >= prod.metric - 0.01`"
_NAME = r"[\w.\-/]+"
_RULE = re.compile(
    rf"^\s*(?P<metric>{_NAME})\s*(?P<op>>=|<=|>|<|==)\s*(?:"
    r"(?P<number>[-+]?\d+(?:\.\d+)?)"
    # the holder's metric is matched lazily, so `prod.accuracy-0.01` reads as a margin of 0.01
    rf"|(?P<alias>[A-Za-z_]\w*)\.(?P<other>{_NAME}?)(?:\s*(?P<sign>[+-])\s*(?P<margin>\d+(?:\.\d+)?))?"
    r")\s*$"
)
_OPERATORS: dict[str, Callable[[Decimal, Decimal], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Candidate:
    """A model version as promotion sees it: its run's metrics and its run record.

    `lock` is None when the record cannot be used, and `problem` then says why (no flexlock
    record, save_dir gone, run.lock unreadable, MLflow run deleted). `lock_digest` names the
    record the version was registered from (its `flexlock.lock_digest` tag, else its run's).
    """

    model: str
    version: str
    run_id: str
    metrics: dict[str, float]
    lock: RunLock | None
    problem: str | None = None
    lock_digest: str | None = None


@dataclass(frozen=True)
class Rule:
    """One parsed rule; `offset` is the number of an absolute rule, the signed margin of a relative one."""

    text: str
    metric: str
    op: str
    offset: Decimal
    alias: str | None = None
    other: str | None = None


def parse_rule(text: str) -> Rule:
    """The rule `text` says, or a LifecycleError naming it and what is wrong.

    Example:
        >>> parse_rule("accuracy >= prod.accuracy - 0.01").alias
        'prod'
        >>> parse_rule("accuracy >= prdo.accuracy")
        Traceback (most recent call last):
        flexlock_prefect.exceptions.LifecycleError: the check ... compares with 'prdo', ... (did you mean 'prod'?): ...
    """
    match = _RULE.match(text)
    if not match:
        raise LifecycleError(f"cannot read the check {text!r}: {HINT}")
    metric, op, number, alias, other, sign, margin = match.group(
        "metric", "op", "number", "alias", "other", "sign", "margin"
    )
    if alias is None:
        return Rule(text, metric, op, Decimal(number))
    if alias not in STATES:
        near = difflib.get_close_matches(alias.lower(), STATES, n=1)
        guess = f" (did you mean {near[0]!r}?)" if near else ""
        raise LifecycleError(
            f"the check {text!r} compares with {alias!r}, which is no lifecycle alias{guess}: "
            f"use one of {', '.join(STATES)}"
        )
    return Rule(text, metric, op, Decimal(f"{sign}{margin}") if margin else Decimal(0), alias, other)


def parse_rules(rules: Iterable[str]) -> list[Rule]:
    """Every rule parsed: one that cannot be read stops them all, before anything is checked."""
    return [parse_rule(rule) for rule in rules]


@dataclass(frozen=True)
class RuleResult:
    """How one rule fared: whether it holds, and the numbers that say so."""

    text: str
    holds: bool
    detail: str

    def __str__(self) -> str:
        return f"{self.text}: {self.detail}"


def check_rules(rules: Iterable[str | Rule], candidate: Candidate, holders: Mapping[str, Candidate]) -> list[str]:
    """The rules that do not hold, each as a sentence; `prod.accuracy` means the prod holder's metric.

    A relative rule whose alias has no holder (other than the candidate) has nothing to compare
    with and holds.

    Example:
        >>> prod = Candidate("churn", "2", "run-2", {"accuracy": 0.85}, None)
        >>> mine = Candidate("churn", "3", "run-3", {"accuracy": 0.88}, None)
        >>> check_rules(["accuracy >= prod.accuracy + 0.03"], mine, {"prod": prod})
        []
        >>> check_rules(["accuracy > prod.accuracy + 0.03"], mine, {"prod": prod})
        ['accuracy > prod.accuracy + 0.03: accuracy is 0.88, needs > 0.88']
    """
    return [str(result) for result in rule_results(rules, candidate, holders) if not result.holds]


def rule_results(
    rules: Iterable[str | Rule], candidate: Candidate, holders: Mapping[str, Candidate]
) -> list[RuleResult]:
    """Every rule with its outcome, in order, as `check_rules` judges it (the evidence lists them all)."""
    return [_judge(r if isinstance(r, Rule) else parse_rule(r), candidate, holders) for r in rules]


def _judge(rule: Rule, candidate: Candidate, holders: Mapping[str, Candidate]) -> RuleResult:
    if rule.metric not in candidate.metrics:
        return RuleResult(rule.text, False, f"version {candidate.version} has no metric {rule.metric!r}")
    bound = rule.offset
    if rule.alias:
        holder = holders.get(rule.alias)
        if holder is None:  # nothing in that state yet: the relative rule has nothing to compare with
            return RuleResult(rule.text, True, f"no {rule.alias} version to compare with")
        if rule.other not in holder.metrics:
            return RuleResult(
                rule.text, False, f"the {rule.alias} version {holder.version} has no metric {rule.other!r}"
            )
        theirs = holder.metrics[rule.other]
        if math.isnan(theirs):
            return RuleResult(rule.text, False, f"the {rule.alias} version {holder.version} has {rule.other} nan")
        bound += _decimal(theirs)
    mine = candidate.metrics[rule.metric]
    # The detail shows the exact values (`:g`), not the tables' four decimals: an outcome can hinge
    # on a digit that rounding would hide ("0.9580, needs >= 0.9580" for a rule that failed).
    holds = not math.isnan(mine) and _OPERATORS[rule.op](_decimal(mine), bound)
    return RuleResult(rule.text, holds, f"{rule.metric} is {mine:g}, needs {rule.op} {float(bound):g}")


def _decimal(value: float) -> Decimal:
    """A metric as the decimal it prints as (0.8, not 0.8000000000000000444)."""
    return Decimal(repr(float(value)))
