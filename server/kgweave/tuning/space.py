"""The search space: one table of parameters, each a :class:`TrainConfig` field.

A row names the field it sets, its distribution, and the condition under which it is searched
(learning rate per optimiser, regulariser weight only with a regulariser...). Adding a training
option to the search is one row; ``tests/test_tune.py`` checks that every row names a
TrainConfig field and that every value it can draw is a valid setting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import optuna

#: a row's condition: the values drawn so far (and the fixed ones) -> searched or not
Condition = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class Param:
    """One searched TrainConfig field.

    ``kind``: ``choice`` (one of ``choices``), ``int``/``float`` (uniform in [low, high]),
    ``log`` (log-uniform float). ``key`` is Optuna's name for it when one field has rows for
    several conditions (``lr`` per optimiser: their ranges differ, and Optuna wants one
    distribution per name).
    """

    field: str
    kind: Literal["choice", "int", "float", "log"]
    choices: Sequence[Any] = ()
    low: float = 0.0
    high: float = 0.0
    when: Condition | None = None
    key: str = ""

    @property
    def name(self) -> str:
        return self.key or self.field

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log")


def _is(field: str, *values: Any) -> Condition:
    return lambda drawn: drawn.get(field) in values


def _not(field: str, *values: Any) -> Condition:
    return lambda drawn: drawn.get(field) not in values


#: the searched settings, in drawing order (a condition reads rows above it): one row per
#: TrainConfig field searched (per-side regulariser weights: the relation side's weight is
#: searched relative to nothing else, the entity side follows ``reg_weight``).
SPACE: tuple[Param, ...] = (
    Param("model", "choice", ("complex", "distmult", "rotate", "transe")),
    Param("dim", "choice", (64, 128, 200, 256, 500)),
    # negative-sampling is for graphs too large for 1-N scores: searched only when fixed (a
    # flag, or the `huge` recipe); on the rest it spent whole budgets (docs/benchmarks.md)
    Param("regime", "choice", ("kvsall", "1vsall")),
    Param("batch_size", "choice", (128, 256, 512, 1024)),
    Param("optimizer", "choice", ("adagrad", "adam")),
    Param("lr", "log", low=0.01, high=0.5, when=_is("optimizer", "adagrad"), key="lr_adagrad"),
    Param("lr", "log", low=1e-4, high=0.01, when=_is("optimizer", "adam"), key="lr_adam"),
    Param("lr_schedule", "choice", ("constant", "cosine", "plateau")),
    Param("regularizer", "choice", ("n3", "l2", "none")),
    Param("reg_weight", "log", low=1e-4, high=0.3, when=_not("regularizer", "none")),
    Param("label_smoothing", "float", low=0.0, high=0.3, when=_not("regime", "negative-sampling")),
    Param("num_negatives", "choice", (64, 128, 256), when=_is("regime", "negative-sampling")),
    Param("margin", "choice", (0.0, 6.0, 9.0, 12.0), when=_is("regime", "negative-sampling")),
    Param("plateau_factor", "choice", (0.1, 0.3, 0.5), when=_is("lr_schedule", "plateau")),
    Param("plateau_patience", "choice", (1, 2, 4), when=_is("lr_schedule", "plateau")),
    Param("warmup_epochs", "choice", (0, 1, 3)),
    Param("relation_reg_weight", "log", low=1e-4, high=0.3, when=_not("regularizer", "none")),
    Param("entity_dropout", "float", low=0.0, high=0.5),
    Param("relation_dropout", "float", low=0.0, high=0.5),
    Param("init", "choice", ("default", "normal", "xavier_uniform", "xavier_normal")),
)


#: fields whose None means "the value of another field" (a recipe leaves them None): what
#: :func:`params_of` enqueues for them, so that the enqueued trial is that recipe's run exactly
SAME_AS: dict[str, str] = {"relation_reg_weight": "reg_weight", "entity_reg_weight": "reg_weight"}


def fields() -> set[str]:
    """The TrainConfig fields the table can set."""
    return {p.field for p in SPACE}


def suggest(trial: optuna.Trial, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Draw one trial's settings: every row whose field is not ``fixed`` and whose condition
    holds (on the values drawn so far and the fixed ones). Returns TrainConfig fields."""
    drawn: dict[str, Any] = dict(fixed)
    for param in SPACE:
        if param.field in fixed or (param.when is not None and not param.when(drawn)):
            continue
        drawn[param.field] = param.suggest(trial)
    return {k: v for k, v in drawn.items() if k not in fixed}


def params_of(settings: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """The table's values (by Optuna name) that stand for ``settings`` (TrainConfig fields):
    what a search enqueues to try a known recipe first. Values the table cannot draw are left
    out (Optuna then draws them)."""
    drawn: dict[str, Any] = dict(fixed)
    params: dict[str, Any] = {}
    for param in SPACE:
        if param.field in fixed or (param.when is not None and not param.when(drawn)):
            continue
        value = settings.get(param.field)
        if value is None and param.field in SAME_AS:
            value = settings.get(SAME_AS[param.field])
        drawn[param.field] = value
        if param.kind == "choice" and value not in param.choices:
            continue
        if param.kind != "choice" and not (
            isinstance(value, int | float) and param.low <= value <= param.high
        ):
            continue
        params[param.name] = value
    return params
