"""Declarative schemas: every configuration critcore reads is a pydantic model built on `Schema`
(no unknown key, `Field` bounds, numbers that refuse booleans, one `model_validator` for the rules
that join fields). `problem` is the one formatter that turns pydantic's errors into critcore's
one-line errors, naming the file or flag, the key and, for an unknown key, the nearest valid one."""
from __future__ import annotations

import difflib
import re
import typing
from typing import Annotated, Any, Callable, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from .errors import ConfigError

__all__ = ["Schema", "Int", "Float", "Field", "ValidationError", "problem", "nearest"]


def _no_bool(value):
    """YAML's `yes` and `true` are booleans, which pydantic would read as 1 (`lr: true` trains at 1.0)."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_from_bool", "expected a number, got a boolean ({shown})",
                                  {"shown": str(value).lower()})
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]


class Schema(BaseModel):
    """A configuration: unknown keys refused, values coerced to their declared types (YAML's
    "1e-4" is a float), built or refused in one line (ConfigError) whichever way it is made."""

    model_config = ConfigDict(extra="forbid")
    key_prefix: ClassVar[str] = ""  # how its keys are named when it stands alone ("train" -> train.lr)
    merges: ClassVar[bool] = True  # a params layer's block merges into it key by key (else replaces it)

    def __init__(self, /, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise problem(e, type(self)) from None

    __init__.__pydantic_base_init__ = True  # pydantic validates nested schemas without it (no error twice)

    @classmethod
    def check(cls, value, where: str | Callable[[list], str] = ""):
        """`value` (a mapping) validated into this schema; a ConfigError naming `where` otherwise."""
        try:
            return cls.model_validate(value)
        except ValidationError as e:
            raise problem(e, cls, where) from None

    def replace(self, **changes):
        """A copy with `changes`, checked again."""
        return type(self).check({**dict(self), **changes})


# ---------------------------------------------------------------- the one error formatter

_TAG = re.compile(r"^(function-|union\[|literal\[|tagged-union\[|json-or-python\[|lax-or-strict\[|nullable\[|chain\[)"
                  r"|^(str|int|float|bool|none|dict\[.*\]|list\[.*\]|tuple\[.*\])$")


def _schemas(cls=None) -> set[str]:
    cls = cls or Schema
    return {cls.__name__}.union(*(_schemas(c) for c in cls.__subclasses__()))


def _schema_in(tp) -> type | None:
    """The Schema a field holds (directly, or in X | None, list[X], dict[str, X])."""
    if isinstance(tp, type) and issubclass(tp, Schema):
        return tp
    return next((found for a in typing.get_args(tp) if (found := _schema_in(a))), None)


def _field_at(cls: type, path: list):
    """(the schema that holds the last key of `path`, its FieldInfo or None)."""
    holder, field, skip = cls, None, False
    for i, item in enumerate(path):
        if skip or isinstance(item, int):  # a free mapping's key, or a list index
            skip = False
            continue
        field = holder.model_fields.get(item) if holder else None
        if field is None:
            return holder, None
        nxt = _schema_in(field.annotation)
        skip = nxt is not None and dict in {typing.get_origin(a) for a in (field.annotation, *typing.get_args(field.annotation))}
        holder = nxt if i < len(path) - 1 else holder
    return holder, field


def nearest(key: str, known, path: str = "") -> str:
    """"; did you mean 'PATH.NAME'?" for the closest of `known`, else the list of them."""
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    prefix = f"{path}." if path else ""
    return f"; did you mean '{prefix}{close[0]}'?" if close else f"; known: {', '.join(sorted(known))}"


def _bounds(field, ctx: dict) -> str:
    """"must be positive", "must be at least 0", "must be in [0, 1)": a field's declared bounds
    (the one broken, where the field is not known)."""
    b = {k: getattr(m, k) for m in (field.metadata if field else []) for k in ("gt", "ge", "lt", "le") if hasattr(m, k)}
    b = b or {k: v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le")}
    low = "gt" in b and "(" or "ge" in b and "["
    if low and ("lt" in b or "le" in b):
        return (f"must be in {low}{b.get('gt', b.get('ge')):g}, "
                f"{b.get('lt', b.get('le')):g}{')' if 'lt' in b else ']'}")
    if b.get("gt") == 0:
        text = "must be positive"
    elif "gt" in b or "ge" in b:
        text = f"must be {'above' if 'gt' in b else 'at least'} {b.get('gt', b.get('ge')):g}"
    else:
        text = f"must be {'below' if 'lt' in b else 'at most'} {b.get('lt', b.get('le')):g}"
    allows_none = field is not None and type(None) in typing.get_args(field.annotation)
    return text + (" or null" if allows_none else "")


def _shown(value) -> str:
    return type(value).__name__ if isinstance(value, (dict, list)) else repr(value)


def problem(e: ValidationError, cls: type, where: str | Callable[[list], str] = "", tagged: bool = False) -> ConfigError:
    """The one-line ConfigError for a ValidationError of schema `cls`: "WHERE: KEY must be ...",
    "WHERE: 'KEY': PROBLEM (got VALUE)" or "WHERE: unknown key 'KEY'; did you mean 'NAME'?".
    `where` names the file or flag, or is a function of the key's path (which layer gave it).
    `tagged`: the errors are of a discriminated union of which `cls` is the member the tag chose."""
    errors = [{**x, "loc": x["loc"][1:]} if tagged and x["type"] != "union_tag_invalid" else x for x in e.errors()]
    errors = sorted(errors, key=lambda x: {"extra_forbidden": 0, "missing": 2}.get(x["type"], 1))
    first = [x for x in errors if x["loc"][:1] == errors[0]["loc"][:1]]
    # of a union's members, the one whose type matched and that got furthest
    err = max(first, key=lambda x: (not x["type"].endswith("_type"), len(x["loc"])))
    names = _schemas()
    path = [x for x in err["loc"] if not (isinstance(x, str) and (_TAG.match(x) or x in names))]
    prefix = getattr(cls, "key_prefix", "")
    key = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in [*([prefix] if prefix else []), *path])
    key = key.lstrip(".")
    holder, field = _field_at(cls, path) if cls else (None, None)
    kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        text = f"unknown key '{key}'{nearest(path[-1], holder.model_fields if holder else [], parent)}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        text = f"{key} {_bounds(field, ctx)}, got {got!r}"
    elif kind in ("value_error", "assertion_error"):  # a validator's; a ConfigError names its key itself
        said = str(ctx.get("error", err["msg"]))
        text = said if not key or isinstance(ctx.get("error"), ConfigError) else \
            f"{key} {said}" if said.startswith("must ") else f"'{key}': {said}"
    elif kind == "missing":
        text = f"'{key}' is missing"
    elif kind == "union_tag_invalid":
        text = f"unknown {ctx['discriminator'].strip(chr(39))} {ctx['tag']!r}; expected one of {ctx['expected_tags']}"
    elif kind == "number_from_bool":
        text = f"'{key}': {err['msg']}"
    else:
        text = f"{err['msg'][:1].lower()}{err['msg'][1:]} (got {_shown(got)})"
        text = f"'{key}': {text}" if key else text
    place = where(path) if callable(where) else where
    return ConfigError(f"{place}: {text}" if place else text)
