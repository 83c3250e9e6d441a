"""A renderer for the part of Helm's template language the ferroserve chart uses.

Helm cannot be installed on the machines that run the tests, so deploy/validate.py
renders the chart with this module. It follows Go's text/template and the Sprig
functions Helm adds, for what the chart uses and nothing more; anything else is an
error rather than a guess, so a template that leaves the subset fails the check
instead of rendering differently from Helm:

- text with `{{ }}` actions, `{{-` / `-}}` trimming, `{{/* comments */}}`;
- fields (`.Values.a.b`, `.Chart.Name`, `.Release.Name`), `.`, `$`, variables
  (`$x := …`, `$x = …`), string, number and boolean literals, `( … )`, pipelines;
- `if` / `else if` / `else` / `end`, `range` (lists and maps, with `$i, $v :=`),
  `with`, `define` and `include`;
- functions: default, quote, toYaml, nindent, indent, printf (%s %d %v), trunc,
  trimSuffix, contains, upper, lower, add, not, and, or, eq, ne, required, fail.

Numbers in values are Go float64s in Helm (values pass through JSON), so they print
as Go's %v prints a float64 (1000000 prints as 1e+06); `add` gives integers.
"""

import json
import re
from decimal import Decimal

import yaml


class TemplateError(Exception):
    """A template that does not parse or does not render (including `fail`)."""


class GoInt(int):
    """An int64 from a function such as `add` (prints as an integer)."""


# --- values as Helm sees them ---------------------------------------------------


def helm_values(data):
    """Values as Helm holds them: every number a float64."""
    if isinstance(data, bool) or data is None or isinstance(data, str):
        return data
    if isinstance(data, (int, float)):
        return float(data)
    if isinstance(data, dict):
        return {str(k): helm_values(v) for k, v in data.items()}
    if isinstance(data, list):
        return [helm_values(v) for v in data]
    raise TemplateError(f"unsupported value type {type(data).__name__}")


def go_float(value):
    """Go's fmt %v of a float64: strconv's 'g' with the shortest digits, which
    switches to an exponent when it is below -4 or at least 6 (1e+06)."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    shortest = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, shortest.digits))
    exponent = len(digits) - 1 + shortest.exponent
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"
    if exponent >= 0:
        whole = digits[: exponent + 1].ljust(exponent + 1, "0")
        fraction = digits[exponent + 1:]
    else:
        whole, fraction = "0", "0" * (-exponent - 1) + digits
    return sign + whole + ("." + fraction if fraction else "")


def printable(value, where):
    """The text `{{ value }}` writes."""
    if value is None:
        raise TemplateError(f"{where}: prints a missing value (Helm would print nothing)")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, GoInt):
        return str(int(value))
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise TemplateError(f"{where}: prints a {type(value).__name__}; use toYaml")


def truthy(value):
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    if isinstance(value, (str, list, dict)):
        return len(value) > 0
    return True


def to_yaml(value):
    """Helm's toYaml: JSON-compatible YAML, keys sorted, no trailing newline."""

    def plain(v):
        if isinstance(v, float) and v == int(v) and abs(v) < 1e21:
            return int(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    text = yaml.safe_dump(plain(value), default_flow_style=False, sort_keys=True,
                          allow_unicode=True, width=1 << 30)
    if text.endswith("...\n"):  # a scalar document
        text = text[: -len("...\n")]
    return text.rstrip("\n")


def go_quote(value):
    """Go's %q of a string: a double-quoted string with Go escapes."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def strval(value):
    if isinstance(value, str):
        return value
    return printable(value, "quote")


# --- lexing -----------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<variable>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>:=|[()|=,])
    )""",
    re.VERBOSE,
)


def tokenize_action(text, where):
    tokens = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"{where}: cannot read {text[pos:]!r}")
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "string":
            value = json.loads(value)
        elif kind == "raw":
            kind, value = "string", value[1:-1]
        tokens.append((kind, value))
        pos = m.end()
    return tokens


def lex(source, name):
    """Splits a template into ('text', str) and ('action', tokens, where) items."""
    items = []
    pos = 0
    trim_next = False
    while True:
        start = source.find("{{", pos)
        text = source[pos:] if start < 0 else source[pos:start]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if start < 0:
            items.append(("text", text))
            return items
        line = source.count("\n", 0, start) + 1
        where = f"{name}:{line}"
        inner_start = start + 2
        if source.startswith("- ", inner_start) or source.startswith("-\n", inner_start):
            text = text.rstrip(" \t\r\n")
            inner_start += 1
        items.append(("text", text))
        if source[inner_start:].lstrip(" ").startswith("/*"):
            close = source.find("*/", inner_start)
            if close < 0:
                raise TemplateError(f"{where}: unclosed comment")
            end = source.find("}}", close)
            if end < 0:
                raise TemplateError(f"{where}: unclosed action")
            trim_next = source[close + 2:end].strip() == "-"
            pos = end + 2
            continue
        end = source.find("}}", inner_start)
        if end < 0:
            raise TemplateError(f"{where}: unclosed action")
        inner = source[inner_start:end]
        trim_next = inner.endswith(" -") or inner.endswith("\n-")
        if trim_next:
            inner = inner[:-1]
        items.append(("action", tokenize_action(inner, where), where))
        pos = end + 2


# --- parsing ----------------------------------------------------------------------


class Parser:
    def __init__(self, items):
        self.items = items
        self.pos = 0
        self.defines = {}

    def parse_body(self, stop):
        """Parses until an action whose keyword is in `stop`; returns (nodes, that action)."""
        nodes = []
        while self.pos < len(self.items):
            item = self.items[self.pos]
            self.pos += 1
            if item[0] == "text":
                if item[1]:
                    nodes.append(("text", item[1]))
                continue
            tokens, where = item[1], item[2]
            if not tokens:
                raise TemplateError(f"{where}: empty action")
            keyword = tokens[0][1] if tokens[0][0] == "ident" else None
            if keyword in stop:
                return nodes, (keyword, tokens[1:], where)
            if keyword in ("end", "else"):
                raise TemplateError(f"{where}: unexpected {{{{{keyword}}}}}")
            if keyword == "if":
                nodes.append(self.parse_if(tokens[1:], where))
            elif keyword == "range":
                nodes.append(self.parse_block("range", tokens[1:], where))
            elif keyword == "with":
                nodes.append(self.parse_block("with", tokens[1:], where))
            elif keyword == "define":
                if len(tokens) != 2 or tokens[1][0] != "string":
                    raise TemplateError(f"{where}: define takes one name")
                body, _ = self.parse_body({"end"})
                self.defines[tokens[1][1]] = body
            elif keyword in ("template", "block", "break", "continue"):
                raise TemplateError(f"{where}: {{{{{keyword}}}}} is outside the supported subset")
            else:
                nodes.append(("action", parse_pipeline(tokens, where), where))
        if stop:
            raise TemplateError(f"missing {{{{end}}}} (expected one of {sorted(stop)})")
        return nodes, None

    def parse_if(self, tokens, where):
        branches = [(parse_pipeline(tokens, where), None)]
        body, (keyword, rest, at) = self.parse_body({"else", "end"})
        branches[0] = (branches[0][0], body)
        else_body = []
        while keyword == "else":
            if rest and rest[0] == ("ident", "if"):
                condition = parse_pipeline(rest[1:], at)
                body, (keyword, rest, at) = self.parse_body({"else", "end"})
                branches.append((condition, body))
            else:
                else_body, (keyword, rest, at) = self.parse_body({"end"})
        return ("if", branches, else_body, where)

    def parse_block(self, kind, tokens, where):
        pipeline = parse_pipeline(tokens, where)
        body, (keyword, _, _) = self.parse_body({"else", "end"})
        else_body = []
        if keyword == "else":
            else_body, _ = self.parse_body({"end"})
        return (kind, pipeline, body, else_body, where)


def parse_pipeline(tokens, where):
    """A pipeline: optional declaration, then commands separated by `|`."""
    decl = None
    names = []
    i = 0
    while i < len(tokens) and tokens[i][0] == "variable" and "." not in tokens[i][1]:
        names.append(tokens[i][1])
        if i + 1 < len(tokens) and tokens[i + 1] == ("punct", ","):
            i += 2
            continue
        if i + 1 < len(tokens) and tokens[i + 1][0] == "punct" and tokens[i + 1][1] in (":=", "="):
            decl = (tokens[i + 1][1], names)
            i += 2
        break
    if decl is None:
        i = 0
    commands = []
    current = []
    depth = 0
    for token in tokens[i:]:
        if token == ("punct", "(" ):
            depth += 1
        elif token == ("punct", ")"):
            depth -= 1
        if token == ("punct", "|") and depth == 0:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    if any(not c for c in commands):
        raise TemplateError(f"{where}: empty command in pipeline")
    return (decl, [parse_command(c, where) for c in commands])


def parse_command(tokens, where):
    operands = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == ("punct", "("):
            depth, j = 1, i + 1
            while j < len(tokens) and depth:
                if tokens[j] == ("punct", "("):
                    depth += 1
                elif tokens[j] == ("punct", ")"):
                    depth -= 1
                j += 1
            if depth:
                raise TemplateError(f"{where}: unbalanced parentheses")
            operands.append(("pipeline", parse_pipeline(tokens[i + 1:j - 1], where)))
            i = j
            continue
        if token[0] == "punct":
            raise TemplateError(f"{where}: unexpected {token[1]!r}")
        operands.append(token)
        i += 1
    return operands


# --- evaluation -------------------------------------------------------------------


class Renderer:
    """Renders templates that share one set of `define`d names."""

    def __init__(self):
        self.defines = {}

    def add(self, source, name):
        parser = Parser(lex(source, name))
        nodes, _ = parser.parse_body(set())
        for key in parser.defines:
            if key in self.defines:
                raise TemplateError(f"{name}: {key!r} is defined twice")
        self.defines.update(parser.defines)
        return nodes

    def render(self, nodes, dot):
        out = []
        self.exec_nodes(nodes, dot, [{"$": dot}], out)
        return "".join(out)

    def exec_nodes(self, nodes, dot, scopes, out):
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "action":
                decl, _ = node[1]
                value = self.eval_pipeline(node[1], dot, scopes, node[2])
                if decl is None:
                    out.append(printable(value, node[2]))
            elif kind == "if":
                _, branches, else_body, where = node
                for condition, body in branches:
                    if truthy(self.eval_pipeline(condition, dot, scopes, where)):
                        self.exec_nodes(body, dot, scopes + [{}], out)
                        break
                else:
                    self.exec_nodes(else_body, dot, scopes + [{}], out)
            elif kind == "with":
                _, pipeline, body, else_body, where = node
                value = self.eval_pipeline(pipeline, dot, scopes, where)
                if truthy(value):
                    self.exec_nodes(body, value, scopes + [{}], out)
                else:
                    self.exec_nodes(else_body, dot, scopes + [{}], out)
            elif kind == "range":
                _, pipeline, body, else_body, where = node
                decl, commands = pipeline
                value = self.eval_pipeline((None, commands), dot, scopes, where)
                if value is None or (isinstance(value, (list, dict)) and not value):
                    self.exec_nodes(else_body, dot, scopes + [{}], out)
                    continue
                if isinstance(value, dict):
                    pairs = [(k, value[k]) for k in sorted(value)]
                elif isinstance(value, list):
                    pairs = list(enumerate(value))
                else:
                    raise TemplateError(f"{where}: range over a {type(value).__name__}")
                for key, item in pairs:
                    scope = {}
                    if decl:
                        names = decl[1]
                        if len(names) == 1:
                            scope[names[0]] = item
                        else:
                            scope[names[0]], scope[names[1]] = key, item
                    self.exec_nodes(body, item, scopes + [scope], out)
            else:  # pragma: no cover
                raise TemplateError(f"unknown node {kind}")

    def eval_pipeline(self, pipeline, dot, scopes, where):
        decl, commands = pipeline
        value = _NOTHING
        for command in commands:
            value = self.eval_command(command, dot, scopes, where, value)
        if decl:
            op, names = decl
            if len(names) != 1:
                raise TemplateError(f"{where}: two variables outside range")
            if op == ":=":
                scopes[-1][names[0]] = value
            else:
                for scope in reversed(scopes):
                    if names[0] in scope:
                        scope[names[0]] = value
                        break
                else:
                    raise TemplateError(f"{where}: {names[0]} assigned before it is declared")
        return value

    def eval_command(self, operands, dot, scopes, where, piped):
        head = operands[0]
        if head[0] == "ident" and head[1] not in ("true", "false", "nil"):
            args = [self.eval_operand(o, dot, scopes, where) for o in operands[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            return self.call(head[1], args, dot, where)
        if len(operands) != 1 or piped is not _NOTHING:
            raise TemplateError(f"{where}: {head[1]!r} is not a function")
        return self.eval_operand(head, dot, scopes, where)

    def eval_operand(self, operand, dot, scopes, where):
        kind, value = operand
        if kind == "string":
            return value
        if kind == "number":
            return float(value) if "." in value else GoInt(int(value))
        if kind == "ident":
            if value in ("true", "false"):
                return value == "true"
            if value == "nil":
                return None
            # A function without arguments as an operand.
            return self.call(value, [], dot, where)
        if kind == "pipeline":
            return self.eval_pipeline(value, dot, scopes, where)
        if kind == "field":
            return self.fields(dot, value.split(".")[1:], where, value)
        if kind == "variable":
            name, *path = value.split(".")
            for scope in reversed(scopes):
                if name in scope:
                    return self.fields(scope[name], path, where, value)
            raise TemplateError(f"{where}: undefined variable {name}")
        raise TemplateError(f"{where}: cannot evaluate {value!r}")

    @staticmethod
    def fields(value, path, where, text):
        for i, name in enumerate(path):
            if name == "":
                continue
            if value is None:
                raise TemplateError(
                    f"{where}: nil pointer evaluating {text} (at {'.'.join(path[:i + 1])})")
            if not isinstance(value, dict):
                raise TemplateError(f"{where}: {text}: cannot take field {name} of a "
                                    f"{type(value).__name__}")
            value = value.get(name)
        return value

    def call(self, name, args, dot, where):
        def want(n):
            if len(args) != n:
                raise TemplateError(f"{where}: {name} takes {n} arguments, got {len(args)}")

        if name == "include":
            want(2)
            if args[0] not in self.defines:
                raise TemplateError(f"{where}: no template {args[0]!r}")
            out = []
            self.exec_nodes(self.defines[args[0]], args[1], [{"$": args[1]}], out)
            return "".join(out)
        if name == "default":
            want(2)
            return args[1] if truthy(args[1]) else args[0]
        if name == "quote":
            return " ".join(go_quote(strval(a)) for a in args if a is not None)
        if name == "toYaml":
            want(1)
            return to_yaml(args[0])
        if name in ("nindent", "indent"):
            want(2)
            pad = " " * int(args[0])
            text = pad + str(args[1]).replace("\n", "\n" + pad)
            return "\n" + text if name == "nindent" else text
        if name == "printf":
            if not args:
                raise TemplateError(f"{where}: printf needs a format")
            fmt = args[0].replace("%v", "%s")
            values = [printable(a, where) if not isinstance(a, str) else a for a in args[1:]]
            try:
                return fmt % tuple(values)
            except (TypeError, ValueError) as e:
                raise TemplateError(f"{where}: printf: {e}")
        if name == "trunc":
            want(2)
            return str(args[1])[: int(args[0])]
        if name == "trimSuffix":
            want(2)
            text = str(args[1])
            return text[: -len(args[0])] if args[0] and text.endswith(args[0]) else text
        if name == "contains":
            want(2)
            return str(args[0]) in str(args[1])
        if name == "upper":
            want(1)
            return str(args[0]).upper()
        if name == "lower":
            want(1)
            return str(args[0]).lower()
        if name == "add":
            if any(isinstance(a, (str, bool)) or a is None for a in args):
                raise TemplateError(f"{where}: add needs numbers, got {args!r}")
            return GoInt(sum(int(a) for a in args))
        if name == "not":
            want(1)
            return not truthy(args[0])
        if name == "and":
            for a in args:
                if not truthy(a):
                    return a
            return args[-1]
        if name == "or":
            for a in args:
                if truthy(a):
                    return a
            return args[-1]
        if name in ("eq", "ne"):
            want(2)
            equal = args[0] == args[1]
            return equal if name == "eq" else not equal
        if name == "required":
            want(2)
            if args[1] is None or args[1] == "":
                raise TemplateError(f"{where}: required: {args[0]}")
            return args[1]
        if name == "fail":
            want(1)
            raise TemplateError(f"{where}: fail: {args[0]}")
        raise TemplateError(f"{where}: function {name!r} is outside the supported subset")


_NOTHING = object()
