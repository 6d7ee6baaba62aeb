"""Verifiable rewards for reinforcement fine-tuning: each scores sampled answers against the sample's reference,
with the evaluation's own metrics, so a run optimises what ``vlmtune eval`` measures.

A reward is a function ``reward(examples: list[Example]) -> list[float | None]``: one
:class:`~vlmtune.evaluate.metrics.Example` per sampled answer (``prediction`` the answer's text, ``references`` the
sample's reference answer first, ``pred_grounding`` / ``ref_grounding`` the boxes and points of both, parsed with
the model family's grounding syntax, in pixels of the original image), one score per answer back, None where the
reward does not apply to the sample (the other rewards then decide). Your own is named ``module:function``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from ..core.names import REWARD_NAMES, reward_problem
from .metrics import Example, get_metric
from .metrics.grounding import _boxes
from .metrics.json_fields import reference_problem as json_problem
from .metrics.text import _to_float

Reward = Callable[[Sequence[Example]], list[float | None]]

_METRIC_OF = {"iou": "iou", "click": "click_accuracy", "exact_match": "exact_match",
              "relaxed_accuracy": "relaxed_accuracy", "anls": "anls", "field_f1": "field_f1"}
"""Built-in rewards that are a metric's per-sample score."""



def builtin_rewards() -> list[str]:
    """Names of the built-in rewards."""
    return sorted(REWARD_NAMES)


def reward(name: str) -> Reward:
    """The reward called ``name``: a built-in, or ``module:function`` imported (ValueError naming what failed)."""
    if name == "format":
        return format_reward
    if name in _METRIC_OF:
        return _metric_reward(_METRIC_OF[name])
    problem = reward_problem(name)
    if problem:
        raise ValueError(problem)
    module, function = name.split(":")
    try:
        found = getattr(importlib.import_module(module), function)
    except ImportError as e:
        raise ValueError(f"reward {name}: cannot import module {module} ({e})") from None
    except AttributeError:
        raise ValueError(f"reward {name}: module {module} has no function {function}") from None
    if not callable(found):
        raise ValueError(f"reward {name}: {module}.{function} is not a function")
    return found


def _metric_reward(metric_name: str) -> Reward:
    metric = get_metric(metric_name)

    def score(examples: Sequence[Example]) -> list[float | None]:
        return list(metric.compute(examples).per_sample)

    return score


def format_reward(examples: Sequence[Example]) -> list[float | None]:
    """1 where the answer has the reference's form, else 0: as many boxes and points as the reference (grounding),
    JSON where the reference is JSON, a number where it is a number, any text otherwise."""
    return [float(_has_form(e)) for e in examples]


def _has_form(example: Example) -> bool:
    prediction, reference = example.prediction.strip(), example.reference.strip()
    if example.ref_grounding:
        return (len(_boxes(example.pred_grounding)) == len(_boxes(example.ref_grounding))
                and len(example.pred_grounding) == len(example.ref_grounding))
    if reference.startswith(("{", "[")) and json_problem(reference) is None:
        return json_problem(prediction) is None
    if _to_float(reference) is not None:
        return _to_float(prediction) is not None
    return bool(prediction)
