"""The part of Go's text/template that ``--format`` flags use, over JSON
documents: ``{{.A.B}}``, ``{{.}}``, ``{{json .X}}``, ``{{index .X 0}}``,
``{{index .X "key"}}``, ``{{join .X ", "}}``, ``{{upper .X}}``,
``{{lower .X}}``, ``{{range .X}}...{{end}}``, ``{{if .X}}...{{else}}...{{end}}``.

Values print as Go prints them: lists as ``[a b]``, maps as ``map[k:v]``,
booleans as ``true``, JSON null as ``<nil>``, a missing key as ``<no value>``.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

MISSING = object()


class TemplateError(ValueError):
    pass


@dataclass
class _Node:
    kind: str                      # "text", "action", "range", "if"
    text: str = ""
    body: list = field(default_factory=list)
    orelse: list = field(default_factory=list)


def render(template: str, document: object) -> str:
    nodes = _parse(_tokens(template.replace("\\n", "\n").replace("\\t", "\t")))
    return "".join(_run(nodes, document))


def _tokens(template: str) -> list[tuple[str, str]]:
    tokens, rest = [], template
    while "{{" in rest:
        head, _, rest = rest.partition("{{")
        if "}}" not in rest:
            raise TemplateError("template: unclosed action")
        action, _, rest = rest.partition("}}")
        if head:
            tokens.append(("text", head))
        tokens.append(("action", action.strip().strip("-").strip()))
    if rest:
        tokens.append(("text", rest))
    return tokens


def _parse(tokens: list[tuple[str, str]]) -> list[_Node]:
    root: list[_Node] = []
    stack: list[tuple[_Node, list[_Node]]] = []
    current = root
    for kind, text in tokens:
        word = text.split(" ", 1)[0]
        if kind == "text":
            current.append(_Node("text", text))
        elif word in ("range", "if"):
            node = _Node(word, text[len(word):].strip())
            current.append(node)
            stack.append((node, current))
            current = node.body
        elif word == "else":
            if not stack or stack[-1][0].kind != "if":
                raise TemplateError("template: unexpected {{else}}")
            current = stack[-1][0].orelse
        elif word == "end":
            if not stack:
                raise TemplateError("template: unexpected {{end}}")
            current = stack.pop()[1]
        else:
            current.append(_Node("action", text))
    if stack:
        raise TemplateError(f"template: unexpected EOF: {{{{{stack[-1][0].kind}}}}} "
                            f"has no {{{{end}}}}")
    return root


def _run(nodes: list[_Node], dot: object):
    for node in nodes:
        if node.kind == "text":
            yield node.text
        elif node.kind == "action":
            value = _evaluate(node.text, dot)
            yield value if isinstance(value, str) and _is_call(node.text) else _show(value)
        elif node.kind == "range":
            items = _evaluate(node.text, dot)
            if isinstance(items, dict):
                items = list(items.values())
            for item in items if isinstance(items, list) else []:
                yield from _run(node.body, item)
        elif node.kind == "if":
            yield from _run(node.body if _truthy(_evaluate(node.text, dot)) else
                            node.orelse, dot)


def _is_call(text: str) -> bool:
    return text.split(" ", 1)[0] in ("json", "join", "upper", "lower")


def _evaluate(text: str, dot: object) -> object:
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise TemplateError(f"template: {exc}") from None
    if not words:
        raise TemplateError("template: empty action")
    function, arguments = words[0], [_argument(w, dot) for w in words[1:]]
    if function == "json":
        return json.dumps(None if arguments[0] is MISSING else arguments[0],
                          separators=(",", ":"))
    if function == "index":
        return _index(arguments)
    if function == "join":
        return str(arguments[1]).join(_show(v) for v in arguments[0] or [])
    if function in ("upper", "lower"):
        text_value = _show(arguments[0])
        return text_value.upper() if function == "upper" else text_value.lower()
    if len(words) == 1:
        return _argument(function, dot)
    raise TemplateError(f'template: function "{function}" not defined')


def _argument(word: str, dot: object) -> object:
    if word == ".":
        return dot
    if word.startswith("."):
        value = dot
        for part in word[1:].split("."):
            value = value.get(part, MISSING) if isinstance(value, dict) else MISSING
            if value is MISSING:
                return MISSING
        return value
    if word.lstrip("-").isdigit():
        return int(word)
    return word


def _index(arguments: list) -> object:
    value = arguments[0]
    for key in arguments[1:]:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            raise TemplateError(f"template: error calling index: {key!r} is not in "
                                f"the value") from None
    return value


def _truthy(value: object) -> bool:
    return value is not MISSING and bool(value)


def _show(value: object) -> str:
    if value is MISSING:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_show(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)
