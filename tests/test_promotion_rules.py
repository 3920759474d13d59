"""Promotion metric rules: `metric OP number` or `metric OP alias.metric [± number]`, each failure a
sentence that names the rule, the value found and the bound it needed; a rule that cannot be
meant as written is a LifecycleError naming it."""

from __future__ import annotations

import pytest

from flexlock_prefect.exceptions import LifecycleError
from flexlock_prefect.rules import Candidate, check_rules, parse_rules

HINT = "write `metric >= 0.9` or `metric >= prod.metric - 0.01`"


def _version(version: str = "7", **metrics: float) -> Candidate:
    return Candidate(model="iris", version=version, run_id=f"run-{version}", metrics=metrics, lock=None)


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        ("accuracy >= 0.9", 0.9),
        ("accuracy >= 0.9", 0.95),
        ("accuracy <= 0.9", 0.9),
        ("accuracy <= 0.9", 0.2),
        ("accuracy > 0.9", 0.91),
        ("accuracy < 0.9", 0.89),
        ("accuracy == 0.9", 0.9),
    ],
)
def test_an_absolute_rule_that_holds_is_no_failure(rule: str, value: float) -> None:
    assert check_rules([rule], _version(accuracy=value), {}) == []


@pytest.mark.parametrize(
    ("rule", "value", "needs"),
    [
        ("accuracy >= 0.9", 0.89, ">= 0.9"),
        ("accuracy <= 0.9", 0.91, "<= 0.9"),
        ("accuracy > 0.9", 0.9, "> 0.9"),
        ("accuracy < 0.9", 0.9, "< 0.9"),
        ("accuracy == 0.9", 0.91, "== 0.9"),
    ],
)
def test_an_absolute_rule_that_fails_says_the_value_and_what_it_needs(rule: str, value: float, needs: str) -> None:
    assert check_rules([rule], _version(accuracy=value), {}) == [f"{rule}: accuracy is {value:g}, needs {needs}"]


def test_a_relative_rule_with_minus_allows_the_margin_below_the_holder() -> None:
    rule = "accuracy >= prod.accuracy - 0.01"
    prod = _version("3", accuracy=0.9)
    assert check_rules([rule], _version(accuracy=0.895), {"prod": prod}) == []
    assert check_rules([rule], _version(accuracy=0.88), {"prod": prod}) == [f"{rule}: accuracy is 0.88, needs >= 0.89"]


def test_a_relative_rule_with_plus_demands_the_margin_above_the_holder() -> None:
    rule = "accuracy >= prod.accuracy + 0.05"
    prod = _version("3", accuracy=0.5)
    assert check_rules([rule], _version(accuracy=0.6), {"prod": prod}) == []
    assert check_rules([rule], _version(accuracy=0.52), {"prod": prod}) == [f"{rule}: accuracy is 0.52, needs >= 0.55"]


def test_a_relative_rule_reads_the_holder_of_the_alias_it_names() -> None:
    rule = "loss <= staging.loss - 0.5"
    holders = {"prod": _version("1", loss=10.0), "staging": _version("2", loss=4.0)}
    assert check_rules([rule], _version(loss=3.5), holders) == []
    assert check_rules([rule], _version(loss=3.75), holders) == [f"{rule}: loss is 3.75, needs <= 3.5"]


def test_a_relative_rule_may_compare_with_another_metric_of_the_holder() -> None:
    rule = "f1 >= prod.accuracy - 0.1"
    assert check_rules([rule], _version(f1=0.85), {"prod": _version("1", accuracy=0.9)}) == []


def test_a_relative_rule_whose_alias_has_no_holder_is_skipped() -> None:
    rule = "accuracy >= prod.accuracy + 0.5"
    assert check_rules([rule], _version(accuracy=0.1), {}) == []
    assert check_rules([rule], _version(accuracy=0.1), {"staging": _version("2", accuracy=0.9)}) == []


def test_a_holder_without_the_metric_is_a_failure_naming_the_alias_and_version() -> None:
    rule = "accuracy >= prod.accuracy - 0.01"
    failures = check_rules([rule], _version(accuracy=0.9), {"prod": _version("3", loss=0.1)})
    assert failures == [f"{rule}: the prod version 3 has no metric 'accuracy'"]


def test_a_candidate_without_the_metric_is_a_failure_naming_the_version() -> None:
    rule = "accuracy >= 0.9"
    assert check_rules([rule], _version("7", loss=0.1), {}) == [f"{rule}: version 7 has no metric 'accuracy'"]


def test_a_candidate_without_the_metric_fails_even_when_the_alias_has_no_holder() -> None:
    rule = "accuracy >= prod.accuracy - 0.01"
    assert check_rules([rule], _version("7"), {}) == [f"{rule}: version 7 has no metric 'accuracy'"]


@pytest.mark.parametrize(
    "rule",
    [
        "",
        "accuracy",
        "accuracy 0.9",
        "accuracy => 0.9",
        "accuracy != 0.9",
        "accuracy = 0.9",
        "accuracy >= high",
        "accuracy >= 1e-3",
        "accuracy >= .5",
        "accuracy >= prod.accuracy * 0.9",
        "accuracy >= 0.9 and loss <= 0.1",
    ],
)
def test_an_unreadable_rule_raises_a_lifecycle_error_with_the_hint(rule: str) -> None:
    with pytest.raises(LifecycleError) as caught:
        check_rules([rule], _version(accuracy=0.95), {})
    assert str(caught.value) == f"cannot read the check {rule!r}: {HINT}"


def test_an_unreadable_rule_anywhere_in_the_list_raises_rather_than_being_skipped() -> None:
    with pytest.raises(LifecycleError, match="accuracy >> 0.9"):
        check_rules(["loss <= 0.2", "accuracy >> 0.9"], _version(accuracy=0.95, loss=0.1), {})


@pytest.mark.parametrize(
    ("rule", "holds", "fails", "needs"),
    [
        ("delta >= -0.5", -0.4, -0.6, ">= -0.5"),
        ("delta <= -2", -3.0, -1.0, "<= -2"),
        ("delta < +1", 0.5, 1.5, "< 1"),
        ("accuracy >= 0.875", 0.875, 0.8749, ">= 0.875"),
        ("epochs == 10", 10.0, 11.0, "== 10"),
    ],
)
def test_negative_signed_decimal_and_integer_bounds_are_read(rule: str, holds: float, fails: float, needs: str) -> None:
    metric = rule.split()[0]
    assert check_rules([rule], _version(**{metric: holds}), {}) == []
    assert check_rules([rule], _version(**{metric: fails}), {}) == [f"{rule}: {metric} is {fails:g}, needs {needs}"]


def test_a_relative_rule_with_a_negative_holder_value() -> None:
    rule = "score >= prod.score - 1.5"
    prod = _version("1", score=-2.0)
    assert check_rules([rule], _version(score=-3.5), {"prod": prod}) == []
    assert check_rules([rule], _version(score=-4), {"prod": prod}) == [f"{rule}: score is -4, needs >= -3.5"]


@pytest.mark.parametrize(
    "rule",
    [
        "accuracy>=0.9",
        "  accuracy >= 0.9  ",
        "accuracy\t>=\t0.9",
        "accuracy>=prod.accuracy-0.01",
        "accuracy   >=   prod.accuracy   -   0.01",
        " accuracy >= prod.accuracy-0.01 ",
    ],
)
def test_whitespace_around_and_between_the_parts_is_tolerated(rule: str) -> None:
    prod = _version("1", accuracy=0.9)
    assert check_rules([rule], _version(accuracy=0.95), {"prod": prod}) == []
    assert check_rules([rule], _version(accuracy=0.5), {"prod": prod}) != []


@pytest.mark.parametrize("metric", ["val/accuracy", "val.accuracy", "val-accuracy", "val_accuracy2"])
def test_metric_names_may_hold_slashes_dots_dashes_and_digits(metric: str) -> None:
    rules = [f"{metric} >= 0.9", f"{metric} >= prod.{metric} - 0.01"]
    holders = {"prod": _version("1", **{metric: 0.9})}
    assert check_rules(rules, _version(**{metric: 0.9}), holders) == []
    assert check_rules(rules, _version(**{metric: 0.5}), holders) == [
        f"{rules[0]}: {metric} is 0.5, needs >= 0.9",
        f"{rules[1]}: {metric} is 0.5, needs >= 0.89",
    ]


def test_every_failing_rule_is_reported_in_the_order_given() -> None:
    rules = ["accuracy >= 0.9", "loss <= 0.1", "f1 >= 0.5", "latency_ms < 100"]
    failures = check_rules(rules, _version(accuracy=0.8, loss=0.05, latency_ms=250), {})
    assert failures == [
        "accuracy >= 0.9: accuracy is 0.8, needs >= 0.9",
        "f1 >= 0.5: version 7 has no metric 'f1'",
        "latency_ms < 100: latency_ms is 250, needs < 100",
    ]


def test_no_rules_means_no_failures() -> None:
    assert check_rules([], _version(), {}) == []


def test_a_candidate_exactly_on_a_relative_bound_passes() -> None:
    rule = "loss <= prod.loss - 0.05"
    assert check_rules([rule], _version(loss=0.8), {"prod": _version("1", loss=0.85)}) == []


def test_a_relative_rule_without_a_margin_compares_with_the_holder_as_is() -> None:
    prod = _version("1", accuracy=0.9)
    assert check_rules(["accuracy >= prod.accuracy"], _version(accuracy=0.9), {"prod": prod}) == []


def _stops_the_promotion(rule: str, candidate: Candidate, holders: dict[str, Candidate]) -> bool:
    """True when the rule fails or is refused as unreadable: anything but a silent pass."""
    try:
        return check_rules([rule], candidate, holders) != []
    except LifecycleError:
        return True


def test_a_relative_rule_naming_an_alias_that_does_not_exist_stops_the_promotion() -> None:
    holders = {"prod": _version("1", accuracy=0.92)}
    assert _stops_the_promotion("accuracy >= prdo.accuracy - 0.01", _version(accuracy=0.1), holders)


def test_arithmetic_on_plain_numbers_is_never_silently_skipped() -> None:
    assert _stops_the_promotion("accuracy >= 0.5 - 0.1", _version(accuracy=0.0), {})


def test_a_relative_rule_without_a_margin_fails_below_the_holder() -> None:
    rule = "loss <= staging.loss"
    assert check_rules([rule], _version(loss=0.31), {"staging": _version("2", loss=0.3)}) == [
        f"{rule}: loss is 0.31, needs <= 0.3"
    ]


def test_bounds_are_exact_decimals_for_plus_margins_too() -> None:
    rule = "accuracy >= prod.accuracy + 0.2"
    assert check_rules([rule], _version(accuracy=0.3), {"prod": _version("1", accuracy=0.1)}) == []  # 0.1 + 0.2


@pytest.mark.parametrize(
    ("alias", "guess"),
    [("prdo", " (did you mean 'prod'?)"), ("Staging", " (did you mean 'staging'?)"), ("champion", "")],
)
def test_a_rule_naming_an_unknown_alias_is_refused_with_a_guess(alias: str, guess: str) -> None:
    rule = f"accuracy >= {alias}.accuracy - 0.01"
    with pytest.raises(LifecycleError) as caught:
        check_rules([rule], _version(accuracy=0.95), {"prod": _version("1", accuracy=0.9)})
    assert str(caught.value) == (
        f"the check {rule!r} compares with {alias!r}, which is no lifecycle alias{guess}: "
        "use one of dev, staging, prod, archived"
    )


@pytest.mark.parametrize("rule", ["accuracy >= 0.5 - 0.1", "accuracy >= 0.5 + 1", "accuracy >= 1.x - 0.1"])
def test_arithmetic_on_plain_numbers_is_unreadable(rule: str) -> None:
    with pytest.raises(LifecycleError) as caught:
        check_rules([rule], _version(accuracy=0.95), {})
    assert str(caught.value) == f"cannot read the check {rule!r}: {HINT}"


def test_every_rule_is_read_before_any_is_checked() -> None:
    with pytest.raises(LifecycleError, match="prdo"):
        parse_rules(["accuracy >= 0.9", "accuracy >= prdo.accuracy"])


def test_a_nan_metric_never_passes() -> None:
    nan = float("nan")
    assert check_rules(["accuracy >= 0.9"], _version(accuracy=nan), {}) == [
        "accuracy >= 0.9: accuracy is nan, needs >= 0.9"
    ]
    rule = "accuracy >= prod.accuracy - 0.01"
    assert check_rules([rule], _version(accuracy=0.9), {"prod": _version("1", accuracy=nan)}) == [
        f"{rule}: the prod version 1 has accuracy nan"
    ]
