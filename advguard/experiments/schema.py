"""The configuration schema language: typed values with ranges, tables with known keys, alternatives.

Every problem is collected (one line each, naming its key as ``section.key`` / ``attack[2].params``) so that one
:class:`~advguard.experiments.config.ConfigError` can list them all before any work starts. Experiments build
their sections' schemas from these pieces (see :meth:`advguard.experiments.registry.Experiment.schema`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator

from ..errors import unknown_name


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, msg: str) -> None:
        self.items.append(f"{key}: {msg}" if key else msg)


def join_key(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key + 1}]"
    return f"{base}.{key}" if base else str(key)


def kind_of(v: object) -> str:
    if isinstance(v, bool):
        return "a boolean"
    return {int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a table"}.get(
        type(v), type(v).__name__
    )


class Spec:
    """A value's expected type and range; ``check`` adds one problem per violation to ``P``."""

    types: tuple[type, ...] = ()

    def type_ok(self, v: object) -> bool:
        return isinstance(v, self.types) and (bool in self.types or not isinstance(v, bool))

    def check(self, v: object, key: str, P: Problems) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


class Int(Spec):
    types = (int,)

    def __init__(self, lo: int | None = None, hi: int | None = None):
        self.lo, self.hi = lo, hi

    def check(self, v: object, key: str, P: Problems) -> bool:
        if isinstance(v, bool) or not isinstance(v, int):
            P.add(key, f"must be an integer, got {kind_of(v)} {v!r}")
            return False
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            rng = (
                f"at least {self.lo}"
                if self.hi is None
                else f"at most {self.hi}"
                if self.lo is None
                else f"in {self.lo}..{self.hi}"
            )
            P.add(key, f"must be {rng}, got {v}")
            return False
        return True


class Num(Spec):
    """A real number (TOML integer or float) in a range; ``open_lo``/``open_hi`` exclude the ends."""

    types = (int, float)

    def __init__(
        self,
        lo: float | None = None,
        hi: float | None = None,
        open_lo: bool = False,
        open_hi: bool = False,
        what: str = "",
    ):
        self.lo, self.hi, self.open_lo, self.open_hi, self.what = lo, hi, open_lo, open_hi, what

    def check(self, v: object, key: str, P: Problems) -> bool:
        import math

        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            P.add(key, f"must be a finite number, got {kind_of(v)} {v!r}")
            return False
        bad_lo = self.lo is not None and (v <= self.lo if self.open_lo else v < self.lo)
        bad_hi = self.hi is not None and (v >= self.hi if self.open_hi else v > self.hi)
        if bad_lo or bad_hi:
            if self.lo is not None and self.hi is not None:
                rng = f"in {'(' if self.open_lo else '['}{self.lo}, {self.hi}{')' if self.open_hi else ']'}"
            elif self.lo is not None:
                rng = f"{'>' if self.open_lo else '>='} {self.lo}"
            else:
                rng = f"{'<' if self.open_hi else '<='} {self.hi}"
            P.add(key, f"must be {self.what or rng}, got {v}")
            return False
        return True


class Str(Spec):
    """A string; with ``registry``, one of its names (``kind`` names the registry in the message)."""

    types = (str,)

    def __init__(self, registry: Collection[object] | None = None, kind: str = "", nonempty: bool = False):
        self.registry, self.kind, self.nonempty = registry, kind, nonempty

    def check(self, v: object, key: str, P: Problems) -> bool:
        if not isinstance(v, str):
            P.add(key, f"must be a string, got {kind_of(v)} {v!r}")
            return False
        if self.nonempty and not v.strip():
            P.add(key, "must not be empty")
            return False
        if self.registry is not None and v not in self.registry:
            P.add(key, str(unknown_name(self.kind, v, [str(n) for n in self.registry])))
            return False
        return True


class Bool(Spec):
    types = (bool,)

    def check(self, v: object, key: str, P: Problems) -> bool:
        if not isinstance(v, bool):
            P.add(key, f"must be true or false, got {kind_of(v)} {v!r}")
            return False
        return True


class AnyValue(Spec):
    def check(self, v: object, key: str, P: Problems) -> bool:
        return True


class List(Spec):
    types = (list,)

    def __init__(self, item: Spec, min_len: int = 0, length: int | None = None, hint: str = ""):
        self.item, self.min_len, self.length, self.hint = item, min_len, length, hint

    def check(self, v: object, key: str, P: Problems) -> bool:
        if not isinstance(v, list):
            P.add(key, f"must be an array{self.hint}, got {kind_of(v)} {v!r}")
            return False
        if self.length is not None and len(v) != self.length:
            P.add(key, f"must have exactly {self.length} items, got {len(v)}")
            return False
        if len(v) < self.min_len:
            P.add(key, f"needs at least {self.min_len} item(s), got {len(v)}")
            return False
        return all([self.item.check(x, join_key(key, i), P) for i, x in enumerate(v)])


class Table(Spec):
    """A TOML table with known keys (``schema``; ``None`` = any key, any value) and ``required`` ones."""

    types = (dict,)

    def __init__(
        self, schema: dict[str, Spec] | None, required: tuple[str, ...] = (), what: str = "a table", hint: str = ""
    ):
        self.schema, self.required, self.what, self.hint = schema, required, what, hint

    def check(self, v: object, key: str, P: Problems) -> bool:
        if not isinstance(v, dict):
            P.add(key, f"must be {self.what}{self.hint}, got {kind_of(v)} {v!r}")
            return False
        ok = True
        if self.schema is not None:
            for k in sorted(set(v) - set(self.schema), key=str):
                P.add(join_key(key, k), unknown_key(k, set(self.schema)))
                ok = False
        for k in self.required:
            if k not in v:
                P.add(join_key(key, k), "missing required key")
                ok = False
        for k, spec in (self.schema or {}).items():
            if k in v:
                ok = spec.check(v[k], join_key(key, k), P) and ok
        return ok


class OneOf(Spec):
    def __init__(self, *specs: Spec, what: str):
        self.specs, self.what = specs, what

    def check(self, v: object, key: str, P: Problems) -> bool:
        for s in self.specs:
            trial = Problems()
            if s.check(v, key, trial):
                return True
        typed = [s for s in self.specs if s.type_ok(v)]
        if len(typed) == 1:  # the right kind of value with a wrong part: report that part
            return typed[0].check(v, key, P)
        P.add(key, f"must be {self.what}, got {kind_of(v)} {v!r}")
        return False


def unknown_key(k: object, allowed: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(str(k), sorted(allowed), 1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {str(k)!r}{hint}; allowed: {', '.join(sorted(allowed))}"


def did_you_mean(k: str, allowed: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" for the closest of ``allowed``, else ""."""
    import difflib

    close = difflib.get_close_matches(str(k), sorted(allowed), 1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def no_parameter(owner: str, k: str, allowed: Iterable[str], listed: Iterable[str] | None = None) -> str:
    """ "<owner> has no parameter 'k' (did you mean 'x'?); its parameters: ..." (``listed``: the parameters named,
    default ``allowed``)."""
    shown = sorted(allowed if listed is None else listed)
    return f"{owner} has no parameter {k!r}" + did_you_mean(k, allowed) + f"; its parameters: {', '.join(shown)}"


def param_problems(
    owner: str, params: Iterable[str], allowed: Iterable[str], bench_set: dict[str, str]
) -> Iterator[tuple[str, str]]:
    """(name, message) for each of ``params`` a config may not set: those the bench sets itself (``bench_set``:
    name -> what sets it) and those ``owner`` does not take (the bench-set ones left out of the list)."""
    allowed = set(allowed)
    for k in params:
        if k in bench_set:
            yield k, f"{k} is set by the bench ({bench_set[k]})"
        elif k not in allowed:
            yield k, no_parameter(owner, k, allowed, allowed - set(bench_set))


POS_INT, NONNEG_INT, POS_NUM = Int(1), Int(0), Num(0, open_lo=True)
SHARE = Num(0, 1, open_lo=True, open_hi=True)  # a share of the image area / a rate, strictly inside (0, 1)
TABLES_HINT = " of tables: write [[{0}]] (double brackets) for each entry, not [{0}]"
