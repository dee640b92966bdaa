"""The :class:`Forecaster` interface and the :class:`Forecast` it returns.

Forecasters follow the scikit-learn / sktime conventions: ``__init__`` only stores
hyper-parameters; the public :meth:`Forecaster.fit`, :meth:`Forecaster.update` and
:meth:`Forecaster.predict` validate and clean their input and then call the subclass hooks
``_fit`` / ``_update`` / ``_predict``; learned state ends in ``_``.

Robustness contract (the control loop must never be broken by data):

* readings that are NaN, +/-inf or negative are treated as missing;
* timestamps that are non-finite or not after the previous one drop their row;
* an exception inside a subclass hook, or an answer that is non-finite, negative or of the wrong
  shape, marks the forecaster *failed* with a short cause. :meth:`Forecaster.predict_strict`
  then raises :class:`ForecastFailedError` (what :class:`~oserve.forecast.guard.GuardedForecaster`
  uses to fall back), while :meth:`Forecaster.predict` answers with the last observed level per
  class and logs the cause once.

Only calling mistakes raise: predicting before fitting (:class:`NotFittedError`), arrays whose
shapes disagree or a negative horizon (:class:`ForecastInputError`).
"""

from __future__ import annotations

import inspect
import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from oserve.errors import ConfigError, OserveError

__all__ = [
    "Forecast",
    "Forecaster",
    "NotFittedError",
    "ForecastFailedError",
    "ForecastInputError",
    "Z_90",
]

logger = logging.getLogger("oserve.forecast")

Z_90 = 1.6448536269514722
"""Standard normal quantile of 0.95: a two-sided 90 % band is ``point +/- Z_90 * sigma``."""


class NotFittedError(OserveError, RuntimeError):
    """``predict`` or ``update`` was called before ``fit``."""


class ForecastInputError(OserveError, ValueError):
    """Arrays passed to ``fit`` / ``update`` / ``predict`` have the wrong shape or type.

    Attributes:
        field: the argument at fault.
        allowed: what it should have been.
    """

    def __init__(self, message: str, *, field: str, allowed: str) -> None:
        super().__init__(message)
        self.field = field
        self.allowed = allowed


class ForecastFailedError(OserveError):
    """A forecaster failed (its model raised or answered garbage).

    Raised only by :meth:`Forecaster.predict_strict`; :meth:`Forecaster.predict` never raises it.

    Attributes:
        cause: short, stable description used as a metric label, e.g. ``"fit:LinAlgError"``,
            ``"non-finite"``, ``"negative"``, ``"wrong-shape"``.
    """

    def __init__(self, message: str, *, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True)
class Forecast:
    """Per-class forecast at one horizon.

    Attributes:
        horizon_s: how far ahead of the last observation the forecast is, seconds.
        rates_rps: point forecast of the arrival rate per class, requests/s, shape ``(k,)``.
        lower_rps: lower end of the (about 90 %) band, shape ``(k,)``, ``<= rates_rps``.
        upper_rps: upper end of the band, shape ``(k,)``, ``>= rates_rps``.
        mean_input_tokens: expected mean prompt tokens per class, shape ``(k,)``, or None when the
            forecaster was never fed token means.
        mean_output_tokens: expected mean output tokens per class, shape ``(k,)``, or None.
        source: name of the forecaster that produced the numbers (``"last"``, ``"arima"``, or
            e.g. ``"arima>fallback-last"`` when a fallback answered).
    """

    horizon_s: float
    rates_rps: np.ndarray
    lower_rps: np.ndarray
    upper_rps: np.ndarray
    mean_input_tokens: np.ndarray | None = None
    mean_output_tokens: np.ndarray | None = None
    source: str = ""

    @property
    def n_classes(self) -> int:
        """Number of classes ``k``."""
        return int(self.rates_rps.shape[0])

    def replace_rates(self, rates_rps: np.ndarray, lower_rps: np.ndarray, upper_rps: np.ndarray,
                      source: str) -> Forecast:
        """Return a copy with new rate arrays (used by wrappers such as the spike guard)."""
        return Forecast(self.horizon_s, rates_rps, lower_rps, upper_rps, self.mean_input_tokens,
                        self.mean_output_tokens, source)


# ---------------------------------------------------------------------------------------------
# input cleaning
# ---------------------------------------------------------------------------------------------


def _as_2d(name: str, arr: Any, n: int) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2 or a.shape[0] != n:
        raise ForecastInputError(
            f"{name} must have shape (n,) or (n, n_classes) with n = len(timestamps_s) = {n}, got {a.shape}",
            field=name, allowed=f"shape ({n}, n_classes)",
        )
    return a


def _clean_missing(a: np.ndarray) -> np.ndarray:
    """Non-finite or negative readings become NaN (missing)."""
    out = a.copy()
    out[~np.isfinite(out) | (out < 0)] = np.nan
    return out


def ffill(y: np.ndarray, initial: float | np.ndarray = 0.0) -> np.ndarray:
    """Forward-fill NaNs along axis 0; leading NaNs take ``initial``.

    Args:
        y: array of shape ``(n, k)`` with NaN for missing.
        initial: value (or per-column values, shape ``(k,)``) before the first reading.

    Returns:
        A new array of shape ``(n, k)`` without NaN.
    """
    n, k = y.shape
    if n == 0:
        return y.copy()
    mask = np.isnan(y)
    idx = np.where(~mask, np.arange(n)[:, None], -1)
    np.maximum.accumulate(idx, axis=0, out=idx)
    init = np.broadcast_to(np.asarray(initial, dtype=np.float64), (k,))
    out = np.where(idx >= 0, y[np.clip(idx, 0, None), np.arange(k)[None, :]], init[None, :])
    return out


class _History:
    """A bounded buffer of observations: timestamps ``(n,)``, rates / token means ``(n, k)``."""

    def __init__(self, k: int, capacity: int) -> None:
        self.capacity = capacity
        self.t = np.zeros(0)
        self.y = np.zeros((0, k))
        self.n_seen = 0

    @property
    def k(self) -> int:
        return int(self.y.shape[1])

    def widen(self, k: int) -> None:
        """Add classes: earlier rows get rate 0 (a class that had no requests yet)."""
        if k > self.k:
            self.y = np.hstack([self.y, np.zeros((self.y.shape[0], k - self.k))])

    def append(self, t: np.ndarray, y: np.ndarray) -> None:
        self.t = np.concatenate([self.t, t])[-self.capacity:]
        self.y = np.vstack([self.y, y])[-self.capacity:]
        self.n_seen += int(t.shape[0])

    def step_s(self) -> float:
        """Median spacing of the timestamps, seconds (1.0 with fewer than two rows)."""
        if self.t.shape[0] < 2:
            return 1.0
        d = np.diff(self.t[-64:])
        d = d[d > 0]
        return float(np.median(d)) if d.size else 1.0

    def filled(self) -> np.ndarray:
        """Rates with missing readings forward-filled (leading gaps as 0)."""
        return ffill(self.y, 0.0)


def _robust_sigma(d: np.ndarray) -> np.ndarray:
    """Per-column robust standard deviation (1.4826 x MAD) of ``d`` shape ``(m, k)``."""
    if d.shape[0] == 0:
        return np.zeros(d.shape[1])
    med = np.median(d, axis=0)
    return 1.4826 * np.median(np.abs(d - med), axis=0)


def spread_rps(filled: np.ndarray, steps: int, step_s: float, level: np.ndarray, window: int = 120) -> np.ndarray:
    """Standard deviation of an h-step-ahead error, per class, requests/s.

    Combines the robust spread of ``steps``-step differences over the last ``window`` rows with the
    Poisson counting noise of one bin (a rate ``r`` measured over ``step_s`` seconds has standard
    deviation ``sqrt(r / step_s)``; at least one request per bin is assumed so an idle class still
    has a band).

    Args:
        filled: rates without NaN, shape ``(n, k)``.
        steps: forecast steps ahead (>= 1).
        step_s: bin width, seconds.
        level: the point forecast, shape ``(k,)``.
        window: rows of history looked at.

    Returns:
        Shape ``(k,)``, requests/s.
    """
    tail = filled[-window:]
    s = min(steps, max(tail.shape[0] - 1, 0))
    diff_sigma = _robust_sigma(tail[s:] - tail[:-s]) if s >= 1 and tail.shape[0] > s else np.zeros(filled.shape[1])
    floor = 1.0 / max(step_s, 1e-9)
    poisson = np.sqrt(np.maximum(level, floor) / max(step_s, 1e-9))
    return np.hypot(diff_sigma, poisson)  # hypot: no overflow for huge readings


class _TokenMeans:
    """EWMA of the mean prompt / output tokens per class, skipping bins with no request (NaN)."""

    alpha = 0.3

    def __init__(self) -> None:
        self.value: np.ndarray | None = None

    def observe(self, tokens: np.ndarray) -> None:
        for row in tokens:
            ok = np.isfinite(row) & (row >= 0)
            if self.value is None or self.value.shape[0] < row.shape[0]:
                grown = np.full(row.shape[0], np.nan)
                if self.value is not None:
                    grown[: self.value.shape[0]] = self.value
                self.value = grown
            cur = self.value
            first = ok & np.isnan(cur)
            cur[first] = row[first]
            rest = ok & ~first
            cur[rest] = (1 - self.alpha) * cur[rest] + self.alpha * row[rest]

    def get(self, k: int) -> np.ndarray | None:
        if self.value is None:
            return None
        out = np.zeros(k)
        m = min(k, self.value.shape[0])
        out[:m] = np.nan_to_num(self.value[:m], nan=0.0)
        return out


# ---------------------------------------------------------------------------------------------
# the ABC
# ---------------------------------------------------------------------------------------------


class Forecaster(ABC):
    """Forecasts per-class arrival rates a horizon ahead.

    Subclasses implement ``_fit()`` (learn from ``self.history_``), ``_update(t_new, y_new)``
    (absorb new rows, already appended to ``self.history_``) and ``_predict(steps, horizon_s)``
    returning ``(rates, lower, upper)`` arrays of shape ``(k,)``. ``y`` arrays hold NaN for missing
    readings; :meth:`history_filled` gives them forward-filled.

    Class attributes:
        name: registry name, set by :func:`oserve.forecast.register`.
        history_capacity: rows of history kept (oldest dropped first).
        retry_every_updates: after a failure, ``_fit`` is retried at most this often.
    """

    name: str = "forecaster"
    history_capacity: int = 4096
    retry_every_updates: int = 30

    # -- hyper-parameters (sklearn style) -----------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind not in (p.VAR_POSITIONAL,
                                                                                             p.VAR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as passed to ``__init__`` (read back from same-named attributes)."""
        return {p: getattr(self, p) for p in self._param_names()}

    def clone(self) -> Self:
        """A new, unfitted forecaster with the same hyper-parameters."""
        return type(self)(**self.get_params())

    def _validate_params(self) -> None:  # noqa: B027 - optional hook, most forecasters have no checks
        """Check hyper-parameters; raise :class:`~oserve.errors.ConfigError` naming the field."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # -- public API --------------------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        """True once :meth:`fit` has been called."""
        return getattr(self, "history_", None) is not None

    @property
    def n_classes_(self) -> int:
        """Number of classes seen so far (columns of the rate arrays)."""
        self._check_fitted()
        return self.history_.k

    def fit(self, timestamps_s: Any, rates_rps: Any, mean_input_tokens: Any = None,
            mean_output_tokens: Any = None) -> Self:
        """Learn from a history, discarding any earlier state.

        Args:
            timestamps_s: observation times, seconds, shape ``(n,)`` (bin starts or ends; only
                differences matter; ``n`` may be 0).
            rates_rps: arrival rates, requests/s, shape ``(n, k)`` (or ``(n,)`` for one class).
                NaN, +/-inf and negative readings are treated as missing.
            mean_input_tokens: optional mean prompt tokens per bin and class, shape ``(n, k)``.
            mean_output_tokens: optional mean output tokens per bin and class, shape ``(n, k)``.

        Returns:
            self.

        Raises:
            ForecastInputError: shapes disagree.
            ConfigError: a hyper-parameter is invalid.

        Side effects:
            Replaces all learned state.
        """
        self._validate_params()
        t, y, tin, tout = self._clean(timestamps_s, rates_rps, mean_input_tokens, mean_output_tokens, None)
        self.history_ = _History(y.shape[1], self.history_capacity)
        self.history_.append(t, y)
        self.tokens_in_ = _TokenMeans()
        self.tokens_out_ = _TokenMeans()
        self._observe_tokens(tin, tout)
        self.failure_: str | None = None
        self._logged_causes_: set[str] = set()
        self._updates_since_failure_ = 0
        self._run_fit()
        return self

    def update(self, timestamps_s: Any, rates_rps: Any, mean_input_tokens: Any = None,
               mean_output_tokens: Any = None) -> Self:
        """Absorb new observations (same conventions as :meth:`fit`).

        Rows whose timestamp is not after the last one seen are dropped. More columns than before
        means new classes appeared: their earlier history is taken as 0 requests/s. Fewer columns
        means the missing classes had no reading (missing).

        Returns:
            self.

        Raises:
            NotFittedError: called before :meth:`fit`.
            ForecastInputError: shapes disagree.
        """
        self._check_fitted()
        t, y, tin, tout = self._clean(timestamps_s, rates_rps, mean_input_tokens, mean_output_tokens,
                                      self.history_.t[-1] if self.history_.t.size else None)
        k_old = self.history_.k
        if y.shape[1] < k_old:
            y = np.hstack([y, np.full((y.shape[0], k_old - y.shape[1]), np.nan)])
        self._observe_tokens(tin, tout)
        if t.shape[0] == 0:
            return self
        grown = y.shape[1] > k_old
        self.history_.widen(y.shape[1])
        self.history_.append(t, y)
        if self.failure_ is not None or grown:
            self._updates_since_failure_ += 1
            if grown or self._updates_since_failure_ >= self.retry_every_updates:
                self._run_fit()
            return self
        try:
            self._update(t, y)
        except OserveError:
            raise
        except Exception as exc:  # noqa: BLE001 - a model's failure must not reach the control loop
            self._fail(f"update:{type(exc).__name__}", exc)
        return self

    def predict(self, horizon_s: float) -> Forecast:
        """Forecast the per-class rates ``horizon_s`` seconds after the last observation.

        Never raises for data reasons: when the model failed, answers the last observed level per
        class and logs the cause once.

        Args:
            horizon_s: seconds ahead (>= 0); converted to ``max(1, round(horizon_s / step))``
                steps of the observed spacing.

        Returns:
            A :class:`Forecast` with finite, non-negative arrays of shape ``(k,)``.

        Raises:
            NotFittedError: called before :meth:`fit`.
            ForecastInputError: ``horizon_s`` negative or not finite.
        """
        try:
            return self.predict_strict(horizon_s)
        except ForecastFailedError as exc:
            self._log_once(exc.cause, f"{self.name} forecaster failed ({exc}); answering with the last level")
            return self._level_forecast(float(horizon_s), source=f"{self.name}>fallback-last")

    def predict_strict(self, horizon_s: float) -> Forecast:
        """Like :meth:`predict` but raises :class:`ForecastFailedError` instead of falling back.

        Raises:
            NotFittedError: called before :meth:`fit`.
            ForecastInputError: ``horizon_s`` negative or not finite.
            ForecastFailedError: the model failed or answered garbage; ``cause`` says why.
        """
        self._check_fitted()
        try:
            h = float(horizon_s)
        except (TypeError, ValueError):
            h = math.nan
        if not (math.isfinite(h) and h >= 0):
            raise ForecastInputError(f"horizon_s must be a finite number >= 0, got {horizon_s!r}",
                                     field="horizon_s", allowed=">= 0 seconds")
        if self.failure_ is not None:
            raise ForecastFailedError(f"{self.name}: {self.failure_}", cause=self.failure_)
        k = self.history_.k
        if self.history_.t.shape[0] == 0:
            z = np.zeros(k)
            return self._make_forecast(h, z, z, self._band(z, 1)[1], self.name)
        try:
            out = self._predict(self._steps(h), h)
        except OserveError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ForecastFailedError(f"{self.name}: predict raised {type(exc).__name__}: {exc}",
                                      cause=f"predict:{type(exc).__name__}") from exc
        cause = check_rates(out, k)
        if cause is not None:
            raise ForecastFailedError(f"{self.name}: predict returned {cause} values", cause=cause)
        mean, lower, upper = (np.asarray(a, dtype=np.float64).reshape(k) for a in out)
        return self._make_forecast(h, mean, np.minimum(lower, mean), np.maximum(upper, mean), self.name)

    # -- helpers for subclasses ---------------------------------------------------------------

    def history_filled(self) -> np.ndarray:
        """History rates, shape ``(n, k)``, with missing readings forward-filled (leading gaps 0)."""
        return self.history_.filled()

    def last_level(self) -> np.ndarray:
        """Last finite reading per class (0 for a class never observed), shape ``(k,)``."""
        f = self.history_.filled()
        return f[-1].copy() if f.shape[0] else np.zeros(self.history_.k)

    def step_s(self) -> float:
        """Observed spacing of the timestamps, seconds."""
        return self.history_.step_s()

    def _steps(self, horizon_s: float) -> int:
        return max(1, int(round(horizon_s / self.step_s())))

    def _band(self, point: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Default ~90 % band around ``point`` from the history's spread (see :func:`spread_rps`)."""
        sigma = spread_rps(self.history_filled(), steps, self.step_s(), point)
        return np.maximum(point - Z_90 * sigma, 0.0), point + Z_90 * sigma

    # -- internals ----------------------------------------------------------------------------

    @abstractmethod
    def _fit(self) -> None:
        """Learn from ``self.history_`` (already cleaned)."""

    @abstractmethod
    def _update(self, t_new: np.ndarray, y_new: np.ndarray) -> None:
        """Absorb rows ``t_new`` (shape ``(m,)``), ``y_new`` (shape ``(m, k)``, NaN = missing).

        The rows are already appended to ``self.history_``.
        """

    @abstractmethod
    def _predict(self, steps: int, horizon_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(rates, lower, upper)``, each shape ``(k,)``, requests/s, ``steps`` bins ahead."""

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(timestamps_s, rates_rps) first")

    def _run_fit(self) -> None:
        self.failure_ = None
        self._updates_since_failure_ = 0
        try:
            self._fit()
        except OserveError:
            raise
        except Exception as exc:  # noqa: BLE001
            self._fail(f"fit:{type(exc).__name__}", exc)

    def _fail(self, cause: str, exc: BaseException | None = None) -> None:
        self.failure_ = cause
        self._updates_since_failure_ = 0
        self._log_once(cause, f"{self.name} forecaster failed: {cause}" + (f": {exc}" if exc else ""))

    def _log_once(self, cause: str, message: str) -> None:
        if cause not in self._logged_causes_:
            self._logged_causes_.add(cause)
            logger.warning(message)

    def _observe_tokens(self, tin: np.ndarray | None, tout: np.ndarray | None) -> None:
        if tin is not None:
            self.tokens_in_.observe(tin)
        if tout is not None:
            self.tokens_out_.observe(tout)

    def _make_forecast(self, h: float, mean: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                       source: str) -> Forecast:
        k = mean.shape[0]
        return Forecast(h, mean, lower, upper, self.tokens_in_.get(k), self.tokens_out_.get(k), source)

    def _level_forecast(self, h: float, source: str) -> Forecast:
        big = np.finfo(np.float64).max
        level = np.nan_to_num(self.last_level(), nan=0.0, posinf=big)
        with np.errstate(all="ignore"):
            lower, upper = self._band(level, self._steps(h))
        lower = np.where(np.isfinite(lower), np.clip(lower, 0.0, level), 0.0)
        upper = np.where(np.isfinite(upper), np.maximum(upper, level), level)
        return self._make_forecast(h, level, lower, upper, source)

    @staticmethod
    def _clean(timestamps_s: Any, rates_rps: Any, tin: Any, tout: Any,
               after: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        t = np.asarray(timestamps_s, dtype=np.float64).reshape(-1) if np.ndim(timestamps_s) <= 1 else None
        if t is None:
            raise ForecastInputError(f"timestamps_s must have shape (n,), got {np.shape(timestamps_s)}",
                                     field="timestamps_s", allowed="shape (n,)")
        n = t.shape[0]
        y = _clean_missing(_as_2d("rates_rps", rates_rps, n))
        a_in = _as_2d("mean_input_tokens", tin, n) if tin is not None else None
        a_out = _as_2d("mean_output_tokens", tout, n) if tout is not None else None
        # keep rows with a finite timestamp strictly after the previous kept one
        keep = np.zeros(n, dtype=bool)
        prev = -math.inf if after is None else float(after)
        for i, ti in enumerate(t):
            if math.isfinite(ti) and ti > prev:
                keep[i] = True
                prev = ti
        return (t[keep], y[keep], None if a_in is None else a_in[keep], None if a_out is None else a_out[keep])


def check_rates(out: Any, k: int) -> str | None:
    """Return why ``out = (rates, lower, upper)`` is unusable, or None when it is fine.

    Causes: ``"wrong-shape"``, ``"non-finite"``, ``"negative"``.
    """
    try:
        arrs = [np.asarray(a, dtype=np.float64) for a in out]
    except (TypeError, ValueError):
        return "wrong-shape"
    if len(arrs) != 3 or any(a.size != k or a.ndim > 1 for a in arrs):
        return "wrong-shape"
    if any(not np.all(np.isfinite(a)) for a in arrs):
        return "non-finite"
    if any(np.any(a < 0) for a in arrs):
        return "negative"
    return None


def require(cond: bool, field: str, allowed: str, value: Any) -> None:
    """Raise :class:`ConfigError` for hyper-parameter ``field`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"invalid forecaster parameter {field}={value!r}; allowed: {allowed}",
                          field=field, allowed=allowed)
