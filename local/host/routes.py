"""ASP.NET Core style route templates, as the Functions host matches them (`api/<route>`).

Supports literals (case-insensitive), `{name}`, `{name:constraint}` (several constraints chained with `:`),
optional `{name?}`, defaults `{name=value}`, catch-all `{*rest}` / `{**rest}`, and several parameters in one
segment (`{a}.{b}`). Constraints are checked after the regex match, like ASP.NET does.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

_PARAM = re.compile(r"\{([^{}]+)\}")
_CONSTRAINT = re.compile(r"^(?P<name>[A-Za-z]+)(?:\((?P<arg>.*)\))?$")


class RouteTemplateError(ValueError):
    """The route template cannot be parsed."""


def _is_int(value: str) -> bool:
    return re.fullmatch(r"-?\d+", value) is not None


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return value.strip().lower() not in {"nan", "inf", "-inf", "infinity", "-infinity"}


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _num_args(arg: str | None) -> list[int]:
    if not arg:
        raise RouteTemplateError("constraint needs an argument")
    return [int(part.strip()) for part in arg.split(",")]


def _build_constraint(spec: str) -> Callable[[str], bool]:
    m = _CONSTRAINT.match(spec)
    if m is None:
        raise RouteTemplateError(f"bad route constraint {spec!r}")
    name, arg = m.group("name").lower(), m.group("arg")
    simple: dict[str, Callable[[str], bool]] = {
        "int": _is_int,
        "long": _is_int,
        "bool": lambda v: v.lower() in {"true", "false"},
        "guid": _is_guid,
        "alpha": lambda v: re.fullmatch(r"[A-Za-z]+", v) is not None,
        "datetime": _is_datetime,
        "decimal": _is_float,
        "double": _is_float,
        "float": _is_float,
        "required": lambda v: v != "",
    }
    if name in simple:
        return simple[name]
    if name == "regex":
        pattern = re.compile(arg or "", re.IGNORECASE)
        return lambda v: pattern.search(v) is not None
    if name in {"minlength", "maxlength", "length", "min", "max", "range"}:
        nums = _num_args(arg)
        if name == "minlength":
            return lambda v: len(v) >= nums[0]
        if name == "maxlength":
            return lambda v: len(v) <= nums[0]
        if name == "length":
            lo, hi = (nums[0], nums[0]) if len(nums) == 1 else (nums[0], nums[1])
            return lambda v: lo <= len(v) <= hi
        if name == "min":
            return lambda v: _is_int(v) and int(v) >= nums[0]
        if name == "max":
            return lambda v: _is_int(v) and int(v) <= nums[0]
        return lambda v: _is_int(v) and nums[0] <= int(v) <= nums[1]
    raise RouteTemplateError(f"unsupported route constraint {spec!r}")


def _split_constraints(body: str) -> list[str]:
    """Split `name:c1:c2(arg:with:colons)` on colons outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in body:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


@dataclass
class _Param:
    name: str
    constraints: list[Callable[[str], bool]]
    optional: bool = False
    default: str | None = None
    catch_all: bool = False


@dataclass
class RouteTemplate:
    """A compiled route template; `match(path)` returns the route parameters or None."""

    template: str
    regex: re.Pattern[str] = field(init=False)
    params: dict[str, _Param] = field(init=False, default_factory=dict)
    precedence: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        segments = [s for s in self.template.strip("/").split("/")] if self.template.strip("/") else []
        pattern, ranks = "", []
        for index, segment in enumerate(segments):
            pattern += self._compile_segment(segment, is_last=index == len(segments) - 1, ranks=ranks)
        self.regex = re.compile(f"^{pattern}/?$", re.IGNORECASE | re.DOTALL)
        self.precedence = tuple(ranks)

    def _parse_param(self, body: str) -> _Param:
        catch_all = body.startswith("*")
        body = body.lstrip("*")
        default = None
        if "=" in body:
            body, default = body.split("=", 1)
        optional = body.endswith("?")
        body = body.rstrip("?")
        name, *constraint_specs = _split_constraints(body)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise RouteTemplateError(f"bad route parameter name {name!r} in {self.template!r}")
        if name in self.params:
            raise RouteTemplateError(f"duplicate route parameter {name!r} in {self.template!r}")
        param = _Param(name, [_build_constraint(c) for c in constraint_specs], optional, default, catch_all)
        self.params[name] = param
        return param

    def _compile_segment(self, segment: str, *, is_last: bool, ranks: list[int]) -> str:
        whole = _PARAM.fullmatch(segment)
        if whole:
            param = self._parse_param(whole.group(1))
            if param.catch_all:
                if not is_last:
                    raise RouteTemplateError(f"catch-all must be the last segment in {self.template!r}")
                ranks.append(5)
                return f"(?:/(?P<{param.name}>.*))?"
            ranks.append(3 if param.constraints else 4)
            if param.optional or param.default is not None:
                if not is_last:
                    raise RouteTemplateError(f"optional parameter must be last in {self.template!r}")
                return f"(?:/(?P<{param.name}>[^/]+))?"
            return f"/(?P<{param.name}>[^/]+)"
        # A literal segment, possibly with embedded parameters (`{a}.{b}`).
        out, pos, has_param = "/", 0, False
        for m in _PARAM.finditer(segment):
            out += re.escape(segment[pos : m.start()])
            param = self._parse_param(m.group(1))
            if param.catch_all or param.optional:
                raise RouteTemplateError(f"complex segment cannot hold optional/catch-all in {self.template!r}")
            out += f"(?P<{param.name}>[^/]+?)"
            pos, has_param = m.end(), True
        out += re.escape(segment[pos:])
        ranks.append(2 if has_param else 1)
        return out

    def match(self, path: str) -> dict[str, str] | None:
        m = self.regex.match("/" + path.strip("/") if path.strip("/") else "")
        if m is None:
            return None
        values: dict[str, str] = {}
        for name, param in self.params.items():
            value = m.group(name)
            if value is None or value == "":
                if param.default is not None:
                    value = param.default
                elif param.optional or param.catch_all:
                    continue
                else:
                    return None
            if not all(check(value) for check in param.constraints):
                return None
            values[name] = value
        return values
