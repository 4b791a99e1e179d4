"""OData query helpers shared by the local simulators (Business Central and Dataverse).

``parse_filter`` is a small recursive-descent parser of the OData ``$filter`` language that compiles
to a predicate over plain dict rows (JSON-shaped: str/int/float/bool/None values, nested dicts for
property paths). Datetime literals compare as datetimes against ISO-8601 strings stored in rows;
GUID literals compare case-insensitively. Every syntax or type problem raises ``ODataError`` so that
a simulator can answer 400 instead of crashing.

Supported: ``eq ne gt ge lt le and or not in``, parentheses, ``startswith endswith contains``,
``tolower toupper length``; literals ``'text'`` (``''`` escapes a quote), numbers, ``true false
null``, GUIDs (bare ``8-4-4-4-12`` or ``guid'...'``), datetimes (``2026-11-25T09:12:03Z``, with a
fraction and/or an offset; also ``datetime'...'``), dates (``2026-11-25``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

__all__ = [
    "Condition",
    "Filter",
    "Guid",
    "ODataError",
    "decode_skiptoken",
    "encode_skiptoken",
    "parse_datetime",
    "parse_filter",
    "parse_maxpagesize",
    "parse_orderby",
    "parse_select",
    "parse_top_skip",
    "select_fields",
    "sort_key",
]


class ODataError(ValueError):
    """An invalid OData query option (a simulator answers 400 with ``message``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Guid(str):
    """A GUID literal, normalised to lower case; compares case-insensitively with row strings."""

    __slots__ = ()


Row = Mapping[str, Any]
Getter = Callable[[Row], Any]

_GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
# An unencoded '+' in a query string arrives as a space; accept it as the offset sign.
_DATETIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|z|[+\- ]\d{2}:\d{2})?"
_TOKEN_RE = re.compile(
    rf"""
    (?P<ws>\s+)
  | (?P<typed>(?:guid|datetime|datetimeoffset)'[^']*')
  | (?P<string>'(?:[^']|'')*')
  | (?P<datetime>{_DATETIME})(?![\w:.])
  | (?P<date>\d{{4}}-\d{{2}}-\d{{2}})(?![\w:-])
  | (?P<guid>{_GUID})(?![\w-])
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)[mMdDfFlL]?(?![\w-])
  | (?P<qfunc>Microsoft\.Dynamics\.CRM\.[A-Za-z]+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<punct>[(),=\[\]])
    """,
    re.VERBOSE,
)
_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
_KEYWORDS = _COMPARISONS | {"and", "or", "not", "in", "true", "false", "null"}
_FUNCTIONS: dict[str, int] = {
    "startswith": 2,
    "endswith": 2,
    "contains": 2,
    "tolower": 1,
    "toupper": 1,
    "length": 1,
}


@dataclass(frozen=True)
class _Token:
    kind: str  # typed, string, datetime, date, guid, number, name, punct, end
    text: str
    value: Any = None
    pos: int = 0


def parse_datetime(text: str) -> datetime:
    """Parse an ISO-8601 datetime (``Z``, offsets, up to 7 fraction digits); naive means UTC."""
    s = text.strip()
    if len(s) > 10 and s[10] == "T" and s[-6] == " ":  # '+' decoded to a space
        s = s[:-6] + "+" + s[-5:]
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    match = re.match(r"^(.*?\.)(\d+)(.*)$", s)
    if match and len(match.group(2)) > 6:  # .NET writes 7 fraction digits; Python takes 6
        s = match.group(1) + match.group(2)[:6] + match.group(3)
    try:
        value = datetime.fromisoformat(s)
    except ValueError as e:
        raise ODataError(f"Invalid datetime value '{text}'.") from e
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            snippet = text[pos : pos + 20]
            if text[pos] == "'":
                raise ODataError(f"Unterminated string literal at position {pos}.")
            raise ODataError(f"Syntax error at position {pos}: '{snippet}'.")
        kind = m.lastgroup or ""
        raw = m.group(kind)
        if kind != "ws":
            tokens.append(_make_token(kind, raw, pos))
        pos = m.end()
    tokens.append(_Token("end", "", None, len(text)))
    return tokens


def _make_token(kind: str, raw: str, pos: int) -> _Token:
    if kind == "string":
        return _Token(kind, raw, raw[1:-1].replace("''", "'"), pos)
    if kind == "typed":
        prefix, _, rest = raw.partition("'")
        inner = rest[:-1]
        if prefix == "guid":
            if not re.fullmatch(_GUID, inner):
                raise ODataError(f"Invalid GUID literal {raw}.")
            return _Token("guid", raw, Guid(inner.lower()), pos)
        return _Token("datetime", raw, parse_datetime(inner), pos)
    if kind == "guid":
        return _Token(kind, raw, Guid(raw.lower()), pos)
    if kind == "datetime":
        return _Token(kind, raw, parse_datetime(raw), pos)
    if kind == "date":
        try:
            return _Token(kind, raw, date.fromisoformat(raw), pos)
        except ValueError as e:
            raise ODataError(f"Invalid date literal {raw}.") from e
    if kind == "number":
        num = raw.rstrip("mMdDfFlL")
        return _Token(kind, raw, float(num) if any(c in num for c in ".eE") else int(num), pos)
    return _Token(kind, raw, raw, pos)


@dataclass(frozen=True)
class Condition:
    """A top-level ``property op literal`` conjunct: a hint a simulator may use to pick an index."""

    path: str
    op: str  # eq ne gt ge lt le in
    value: Any


@dataclass
class Filter:
    """A compiled ``$filter``: call it with a row. ``conditions`` are the top-level AND-ed simple
    comparisons (every matching row satisfies all of them), ``properties`` every referenced path."""

    predicate: Callable[[Row], bool]
    conditions: list[Condition] = field(default_factory=list)
    properties: set[str] = field(default_factory=set)

    def __call__(self, row: Row) -> bool:
        return self.predicate(row)


@dataclass
class _Node:
    get: Getter
    literal: bool = False
    value: Any = None  # the literal's value
    path: str | None = None  # set for a bare property path
    condition: Condition | None = None
    conjuncts: list[Condition] | None = None  # for AND chains of simple conditions


# Dataverse's documented query functions for value lists (Learn "Filter rows": query functions);
# OData 4.01's ``in`` operator is not documented for the Web API, so the Dataverse dialect refuses it.
_DV_LIST_FUNCTIONS = {"Microsoft.Dynamics.CRM.In": False, "Microsoft.Dynamics.CRM.NotIn": True}


class _Parser:
    def __init__(
        self, text: str, fields: Collection[str] | None, case_insensitive: bool = False, dialect: str = "bc"
    ) -> None:
        self.tokens = _tokenize(text)
        self.i = 0
        self.fields = fields
        self.properties: set[str] = set()
        self.ci = case_insensitive
        self.dialect = dialect

    # -- token helpers
    def peek(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at_keyword(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "name" and tok.text in words

    def expect_punct(self, ch: str) -> None:
        tok = self.next()
        if tok.kind != "punct" or tok.text != ch:
            raise ODataError(f"Expected '{ch}' at position {tok.pos}, found '{tok.text or 'end of text'}'.")

    # -- grammar
    def parse(self) -> Filter:
        node = self.or_expr()
        tok = self.peek()
        if tok.kind != "end":
            raise ODataError(f"Unexpected '{tok.text}' at position {tok.pos}.")
        if node.literal and not isinstance(node.value, bool):
            raise ODataError("The $filter expression must be a boolean expression.")
        get = node.get
        conditions = node.conjuncts or ([node.condition] if node.condition else [])
        return Filter(lambda row: get(row) is True, conditions, self.properties)

    def or_expr(self) -> _Node:
        before = set(self.properties)
        left = self.and_expr()
        left_props = self.properties - before
        while self.at_keyword("or"):
            self.next()
            mark = set(self.properties)
            right = self.and_expr()
            right_props = self.properties - mark
            if self.dialect == "bc" and left_props and right_props and left_props != right_props:
                # Learn "Using filter expressions in OData URIs": "you can't use OR operators to apply
                # filters on two different fields".
                raise ODataError("OR operators cannot be used to apply filters on different fields.")
            left_props = left_props | right_props
            lg, rg = left.get, right.get
            left = _Node(lambda r, lg=lg, rg=rg: _truth(lg(r)) or _truth(rg(r)))
        return left

    def and_expr(self) -> _Node:
        left = self.not_expr()
        conjuncts = _conds(left)
        while self.at_keyword("and"):
            self.next()
            right = self.not_expr()
            lg, rg = left.get, right.get
            rc = _conds(right)
            conjuncts = conjuncts + rc if conjuncts is not None and rc is not None else None
            left = _Node(lambda r, lg=lg, rg=rg: _truth(lg(r)) and _truth(rg(r)), conjuncts=conjuncts)
        return left

    def not_expr(self) -> _Node:
        if self.at_keyword("not"):
            self.next()
            inner = self.not_expr()
            g = inner.get
            return _Node(lambda r, g=g: not _truth(g(r)))
        return self.comparison()

    def _kind_of(self, node: _Node) -> str | None:
        """The declared kind of a bare property (when ``fields`` maps names to definitions with ``kind``)."""
        if node.path is None or not isinstance(self.fields, Mapping):
            return None
        return getattr(self.fields.get(node.path), "kind", None)

    def comparison(self) -> _Node:
        left = self.primary()
        if self.at_keyword(*_COMPARISONS):
            op = self.next().text
            right = self.primary()
            if self.dialect == "dataverse":
                for prop, lit in ((left, right), (right, left)):
                    if self._kind_of(prop) == "datetime" and lit.literal and isinstance(lit.value, str):
                        # The Web API's parser types operands: Edm.DateTimeOffset vs Edm.String is refused.
                        raise ODataError(
                            f"A binary operator with incompatible types was detected. Found operand types "
                            f"'Edm.DateTimeOffset' and 'Edm.String' for operator kind '{op}'."
                        )
            if self.ci and op in ("eq", "ne"):
                left, right = _folded(left), _folded(right)
            return _compare_node(op, left, right)
        if self.at_keyword("in"):
            if self.dialect == "dataverse":
                tok = self.peek()
                raise ODataError(
                    f"Syntax error at position {tok.pos}: the 'in' operator is not supported; "
                    "use Microsoft.Dynamics.CRM.In(PropertyName=...,PropertyValues=[...])."
                )
            self.next()
            self.expect_punct("(")
            items = [self.primary()]
            while self.peek().kind == "punct" and self.peek().text == ",":
                self.next()
                items.append(self.primary())
            self.expect_punct(")")
            if not all(item.literal for item in items):
                raise ODataError("The 'in' operator takes a list of literals.")
            values = [item.value for item in items]
            if self.ci:
                values = [_fold(v) for v in values]
                left = _folded(left)
            lg = left.get
            cond = Condition(left.path, "in", values) if left.path else None
            return _Node(lambda r, lg=lg: any(_equal(lg(r), v) for v in values), condition=cond)
        return left

    def primary(self) -> _Node:
        tok = self.next()
        if tok.kind == "punct" and tok.text == "(":
            node = self.or_expr()
            self.expect_punct(")")
            return node
        if tok.kind in ("string", "guid", "datetime", "date", "number"):
            return _literal(tok.value)
        if tok.kind == "qfunc":
            return self.list_function(tok)
        if tok.kind == "name":
            word = tok.text
            if word in ("true", "false"):
                return _literal(word == "true")
            if word == "null":
                return _literal(None)
            if word in _FUNCTIONS and self.peek().kind == "punct" and self.peek().text == "(":
                return self.function(word)
            if word in _KEYWORDS:
                raise ODataError(f"Unexpected keyword '{word}' at position {tok.pos}.")
            return self.property(word, tok.pos)
        raise ODataError(f"Unexpected '{tok.text or 'end of text'}' at position {tok.pos}.")

    def property(self, path: str, pos: int) -> _Node:
        head = path.split("/", 1)[0]
        if self.fields is not None and head not in self.fields:
            raise ODataError(f"Could not find a property named '{head}' on type of the entity set.")
        self.properties.add(path)
        parts = path.split("/")
        if len(parts) == 1:
            return _Node(lambda r, k=path: r.get(k), path=path)

        def get(row: Row) -> Any:
            value: Any = row
            for part in parts:
                if not isinstance(value, Mapping):
                    return None
                value = value.get(part)
            return value

        return _Node(get, path=path)

    def list_function(self, tok: _Token) -> _Node:
        """``Microsoft.Dynamics.CRM.In(PropertyName='x',PropertyValues=['a','b'])`` (and ``NotIn``)."""
        if self.dialect != "dataverse" or tok.text not in _DV_LIST_FUNCTIONS:
            raise ODataError(f"Unknown function '{tok.text}' at position {tok.pos}.")
        negate = _DV_LIST_FUNCTIONS[tok.text]
        self.expect_punct("(")
        args: dict[str, Any] = {}
        for i in range(2):
            if i:
                self.expect_punct(",")
            name = self.next()
            if name.kind != "name" or name.text not in ("PropertyName", "PropertyValues") or name.text in args:
                raise ODataError(f"{tok.text} takes PropertyName and PropertyValues (position {name.pos}).")
            self.expect_punct("=")
            if name.text == "PropertyName":
                value = self.next()
                if value.kind != "string":
                    raise ODataError(f"{tok.text}: PropertyName must be a string literal.")
                args["PropertyName"] = value.value
            else:
                self.expect_punct("[")
                items: list[Any] = []
                while not (self.peek().kind == "punct" and self.peek().text == "]"):
                    if items:
                        self.expect_punct(",")
                    item = self.next()
                    if item.kind != "string":
                        raise ODataError(f"{tok.text}: PropertyValues are string literals.")
                    items.append(item.value)
                self.expect_punct("]")
                args["PropertyValues"] = items
        self.expect_punct(")")
        left = self.property(args["PropertyName"], tok.pos)
        values = [_fold(v) for v in args["PropertyValues"]] if self.ci else list(args["PropertyValues"])
        if self.ci:
            left = _folded(left)
        lg = left.get
        member = _membership(values)
        if negate:
            return _Node(lambda r, lg=lg: not member(lg(r)))
        cond = Condition(left.path, "in", values) if left.path else None
        return _Node(lambda r, lg=lg: member(lg(r)), condition=cond)

    def function(self, name: str) -> _Node:
        self.expect_punct("(")
        args = [self.or_expr()]
        while self.peek().kind == "punct" and self.peek().text == ",":
            self.next()
            args.append(self.or_expr())
        self.expect_punct(")")
        if len(args) != _FUNCTIONS[name]:
            raise ODataError(f"Function '{name}' takes {_FUNCTIONS[name]} argument(s), got {len(args)}.")
        if name in ("tolower", "toupper", "length"):
            g = args[0].get

            def unary(row: Row, g: Getter = g) -> Any:
                value = g(row)
                if value is None:
                    return None
                if not isinstance(value, str):
                    raise ODataError(f"Function '{name}' needs a string argument.")
                if name == "length":
                    return len(value)
                return value.lower() if name == "tolower" else value.upper()

            return _Node(unary)
        a, b = args[0].get, args[1].get

        def binary(row: Row) -> bool:
            x, y = a(row), b(row)
            if x is None or y is None:
                return False
            if not isinstance(x, str) or not isinstance(y, str):
                raise ODataError(f"Function '{name}' needs string arguments.")
            if name == "startswith":
                return x.startswith(y)
            if name == "endswith":
                return x.endswith(y)
            return y in x

        return _Node(binary)


def _fold(value: Any) -> Any:
    return value.casefold() if type(value) is str else value  # GUID literals (a str subclass) stay as they are


def _folded(node: _Node) -> _Node:
    """The node with text values case-folded (a service whose text comparisons ignore case)."""
    g = node.get
    return _Node(
        lambda r, g=g: _fold(g(r)),
        literal=node.literal,
        value=_fold(node.value),
        path=node.path,
        condition=node.condition,
        conjuncts=node.conjuncts,
    )


def _truth(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    raise ODataError("A boolean operand was expected.")


def _conds(node: _Node) -> list[Condition] | None:
    if node.conjuncts is not None:
        return node.conjuncts
    return [node.condition] if node.condition else None


def _literal(value: Any) -> _Node:
    return _Node(lambda _r, v=value: v, literal=True, value=value)


_FLIP = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}


def _compare_node(op: str, left: _Node, right: _Node) -> _Node:
    lg, rg = left.get, right.get
    cond: Condition | None = None
    if left.path and right.literal:
        cond = Condition(left.path, op, right.value)
    elif right.path and left.literal:
        cond = Condition(right.path, _FLIP[op], left.value)
    if op == "eq":
        return _Node(lambda r: _equal(lg(r), rg(r)), condition=cond)
    if op == "ne":
        return _Node(lambda r: not _equal(lg(r), rg(r)), condition=cond)
    return _Node(lambda r: _order(op, lg(r), rg(r)), condition=cond)


def _coerce(a: Any, b: Any) -> tuple[Any, Any]:
    """Bring two operands to comparable Python values or raise ODataError on a type mismatch."""
    if isinstance(a, Guid) or isinstance(b, Guid):
        if isinstance(a, str) and isinstance(b, str):
            return a.lower(), b.lower()
    elif isinstance(a, datetime) or isinstance(b, datetime):
        return _as_datetime(a), _as_datetime(b)
    elif isinstance(a, date) or isinstance(b, date):
        return _as_date(a), _as_date(b)
    elif isinstance(a, bool) or isinstance(b, bool):
        if isinstance(a, bool) and isinstance(b, bool):
            return a, b
    elif isinstance(a, int | float) and isinstance(b, int | float):
        return a, b
    elif isinstance(a, str) and isinstance(b, str):
        return a, b
    raise ODataError(f"Cannot compare values of types {_type_name(a)} and {_type_name(b)}.")


def _type_name(value: Any) -> str:
    if isinstance(value, Guid):
        return "Edm.Guid"
    return {str: "Edm.String", bool: "Edm.Boolean", int: "Edm.Int64", float: "Edm.Decimal"}.get(
        type(value), type(value).__name__
    )


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        return parse_datetime(value)
    raise ODataError(f"Cannot compare {_type_name(value)} with Edm.DateTimeOffset.")


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError as e:
            raise ODataError(f"Invalid date value '{value}'.") from e
    raise ODataError(f"Cannot compare {_type_name(value)} with Edm.Date.")


def _equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    x, y = _coerce(a, b)
    return bool(x == y)


def _membership(values: list[Any]) -> Callable[[Any], bool]:
    """``value in values`` with ``_equal``'s rules. A text or GUID value against text literals (what an
    ``In`` of ~660 ids is) is a set lookup; any other value is compared one by one, so a type mismatch
    still raises as ``_equal`` does (a re-read of 660 ids was 660 x 660 comparisons)."""

    def one_by_one(a: Any) -> bool:
        return any(_equal(a, v) for v in values)

    if not all(type(v) is str for v in values):
        return one_by_one
    exact = frozenset(values)
    lowered = frozenset(v.lower() for v in values)  # a GUID compares ignoring case (_coerce)

    def member(a: Any) -> bool:
        if a is None:
            return False
        if isinstance(a, Guid):
            return a.lower() in lowered
        if type(a) is str:
            return a in exact
        return one_by_one(a)

    return member


def _order(op: str, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False  # null is neither greater nor less than a value (OData semantics)
    x, y = _coerce(a, b)
    if isinstance(x, bool):
        raise ODataError(f"Operator '{op}' is not defined for Edm.Boolean.")
    if op == "gt":
        return bool(x > y)
    if op == "ge":
        return bool(x >= y)
    if op == "lt":
        return bool(x < y)
    return bool(x <= y)


# Dataverse's documented URL limit (32 KB) bounds a filter there; BC: a guard of the simulator.
_MAX_URL_DATAVERSE = 32_768


def parse_filter(
    text: str, *, fields: Collection[str] | None = None, case_insensitive: bool = False, dialect: str = "bc"
) -> Filter:
    """Compile a ``$filter`` expression to a predicate over dict rows.

    ``case_insensitive``: ``eq``/``ne``/``in`` compare text ignoring case (Dataverse's default collation).
    ``dialect``: ``"bc"`` (OData 4.01 ``in``; OR across different fields refused, as BC documents) or
    ``"dataverse"`` (``Microsoft.Dynamics.CRM.In``/``NotIn``; the ``in`` operator refused).
    ``fields``: the entity's property names; when given, an unknown property raises ``ODataError``
    at parse time (the real services answer 400). Type mismatches found while evaluating a row also
    raise ``ODataError``; callers should evaluate inside their error handling.
    """
    if not text or not text.strip():
        raise ODataError("The $filter expression is empty.")
    if len(text) > (_MAX_URL_DATAVERSE if dialect == "dataverse" else 8000):
        raise ODataError("The $filter expression is too long.")
    try:
        return _Parser(text, fields, case_insensitive, dialect).parse()
    except RecursionError as e:
        raise ODataError("The $filter expression is nested too deeply.") from e


_ORDER_ITEM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*)(?:\s+(asc|desc))?$", re.I)


def parse_orderby(text: str | None, *, fields: Collection[str] | None = None) -> list[tuple[str, bool]]:
    """Parse ``$orderby``: ``"a desc, b"`` -> ``[("a", True), ("b", False)]``; the bool is DESCENDING."""
    if text is None or not text.strip():
        return []
    result: list[tuple[str, bool]] = []
    for part in text.split(","):
        m = _ORDER_ITEM.match(part.strip())
        if not m:
            raise ODataError(f"Invalid $orderby item '{part.strip()}'.")
        name = m.group(1)
        if fields is not None and name.split("/", 1)[0] not in fields:
            raise ODataError(f"Could not find a property named '{name}' on type of the entity set.")
        result.append((name, (m.group(2) or "asc").lower() == "desc"))
    return result


def sort_key(value: Any) -> tuple[int, Any]:
    """A total-order key for JSON values (None first, then numbers, then strings) for sorting rows."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (2, value)
    return (3, str(value))


def parse_select(text: str | None, *, fields: Collection[str] | None = None) -> list[str] | None:
    """Parse ``$select`` into a list of property names (None when absent or ``*``)."""
    if text is None or not text.strip() or text.strip() == "*":
        return None
    names = [p.strip() for p in text.split(",")]
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ODataError(f"Invalid $select item '{name}'.")
        if fields is not None and name not in fields:
            raise ODataError(f"Could not find a property named '{name}' on type of the entity set.")
    return names


def select_fields(row: Mapping[str, Any], select: Iterable[str] | None) -> dict[str, Any]:
    """Project a row to the selected properties, keeping ``@odata.*`` annotations; None = all."""
    if select is None:
        return dict(row)
    wanted = set(select)
    return {k: v for k, v in row.items() if k in wanted or k.startswith("@")}


def parse_top_skip(top: str | None, skip: str | None) -> tuple[int | None, int]:
    """Parse ``$top``/``$skip`` as non-negative integers."""

    def as_int(name: str, raw: str) -> int:
        if not raw.isdigit():
            raise ODataError(f"Invalid value '{raw}' for {name}; a non-negative integer is expected.")
        return int(raw)

    return (as_int("$top", top) if top is not None else None, as_int("$skip", skip) if skip is not None else 0)


def parse_maxpagesize(prefer: str | None) -> int | None:
    """The ``odata.maxpagesize`` preference of a ``Prefer`` header (None when absent or invalid)."""
    if not prefer:
        return None
    m = re.search(r"(?:^|[,;\s])(?:odata\.)?maxpagesize\s*=\s*\"?(\d+)", prefer, re.I)
    if not m:
        return None
    value = int(m.group(1))
    return value if value > 0 else None


def encode_skiptoken(state: Mapping[str, Any]) -> str:
    """An opaque, URL-safe ``$skiptoken`` carrying the resume state of a paged query."""
    raw = json.dumps(state, separators=(",", ":"), sort_keys=True, default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_skiptoken(token: str) -> dict[str, Any]:
    """Decode a token made by ``encode_skiptoken``; raise ``ODataError`` if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        state = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as e:
        raise ODataError("The $skiptoken is invalid.") from e
    if not isinstance(state, dict):
        raise ODataError("The $skiptoken is invalid.")
    return state
