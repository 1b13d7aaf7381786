"""The YAML form of a profile (DESIGN §3); JSON documents are read as YAML too.

Parsing uses PyYAML's safe loader with three changes that keep YAML and XML in step:
booleans are only ``true``/``false``, integers only plain decimals, and there are no
sexagesimal numbers or timestamps, so ``20:00:00:25:35:00:00:01`` or ``2026-11-01``
stay strings. Aliases are refused (a profile has no use for them, and expanding them
multiplies the work of validation). Every issue carries the line of its key or value,
found by walking the composed node tree.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from appliance.domain.profile.document import LineOf, check_size, format_path, to_dict, validate_data
from appliance.domain.profile.model import DEFAULT_PARKING_VLAN, Loc, Profile
from appliance.errors import Issue, ValidationError

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


MAX_DEPTH = 32       # a profile nests 6 levels; deeper is an attack on the parser, not a profile
MAX_NODES = 20_000   # the largest real profile has a few hundred


class _Refused(Exception):
    """Composing stopped at the first problem that makes the rest pointless to read."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.reason)
        self.issue = issue


class _Loader(yaml.SafeLoader):
    """Composes with bounds: depth, node count, and each mapping's keys unique, checked as
    they are read, so a hostile document stops at its first excess instead of after
    composing all of it (80,000 duplicate keys took 5 s to compose)."""

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self._path: list[str | int] = []
        self._nodes = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
            mark: yaml.error.Mark | None = event.start_mark  # type: ignore[assignment]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a profile", mark)
        self._nodes += 1
        if self._nodes > MAX_NODES or len(self._path) >= MAX_DEPTH:
            start: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
            line = int(start.start_mark.line) + 1 if start.start_mark is not None else None
            why = (f"nests deeper than {MAX_DEPTH} levels" if len(self._path) >= MAX_DEPTH
                   else f"has more than {MAX_NODES} values; a profile has a few hundred")
            raise _Refused(Issue(format_path(tuple(self._path)), why, line))
        node: Node | None = super().compose_node(parent, index)
        return node

    # PyYAML's stubs type these hooks loosely; Any keeps the overrides honest about that.
    def compose_sequence_node(self, anchor: Any) -> Any:
        start: Any = self.get_event()  # type: ignore[no-untyped-call]
        tag = start.tag if start.tag not in (None, "!") else \
            self.resolve(SequenceNode, None, start.implicit)  # type: ignore[no-untyped-call]
        node = SequenceNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        index = 0
        while not self.check_event(yaml.SequenceEndEvent):
            self._path.append(index)
            try:
                item = self.compose_node(node, index)
            finally:
                self._path.pop()
            node.value.append(item)
            index += 1
        end: yaml.Event = self.get_event()  # type: ignore[no-untyped-call]
        node.end_mark = end.end_mark
        return node

    def compose_mapping_node(self, anchor: Any) -> Any:
        start: Any = self.get_event()  # type: ignore[no-untyped-call]
        tag = start.tag if start.tag not in (None, "!") else \
            self.resolve(MappingNode, None, start.implicit)  # type: ignore[no-untyped-call]
        node = MappingNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        seen: dict[str, int] = {}
        while not self.check_event(yaml.MappingEndEvent):
            key: Any = self.compose_node(node, None)  # type: ignore[arg-type]
            name = key.value if isinstance(key, ScalarNode) else None
            if name is not None:
                if name in seen:
                    raise _Refused(Issue(format_path((*self._path, name)),
                                         f"appears twice (first on line {seen[name]})", _line(key)))
                seen[name] = _line(key)
            self._path.append(name if name is not None else "?")
            try:
                value = self.compose_node(node, key)
            finally:
                self._path.pop()
            node.value.append((key, value))
        end: yaml.Event = self.get_event()  # type: ignore[no-untyped-call]
        node.end_mark = end.end_mark
        return node


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(_INT, re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _line_finder(root: Node) -> LineOf:
    def line_of(loc: Loc) -> int | None:
        node, line = root, _line(root)
        for i, part in enumerate(loc):
            last = i == len(loc) - 1
            if isinstance(node, MappingNode) and isinstance(part, str):
                for key, value in node.value:
                    if isinstance(key, ScalarNode) and key.value == part:
                        line = _line(key if last else value)
                        node = value
                        break
                else:
                    return line
            elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                line = _line(node)
            else:
                return line
        return line

    return line_of


def parse_yaml(text: str | bytes, *, source: str | None = None,
               parking_vlan: int | None = DEFAULT_PARKING_VLAN) -> Profile:
    """Parse and validate a YAML (or JSON) profile; raises ValidationError with every issue and its line.

    ``parking_vlan`` is the appliance's configured one (``network.parking_vlan``); None skips that rule.
    """
    check_size(text, source=source)
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:  # undecodable bytes are found as soon as the reader starts
        raise ValidationError([Issue("", f"not valid YAML: {exc}")], source=source) from None
    try:
        try:
            root = loader.get_single_node()
        except _Refused as exc:
            raise ValidationError([exc.issue], source=source) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            raise ValidationError(
                [Issue("", f"YAML syntax error: {exc.problem or exc}", line)], source=source
            ) from None
        except yaml.YAMLError as exc:
            raise ValidationError([Issue("", f"not valid YAML: {exc}")], source=source) from None
        if root is None:
            raise ValidationError([Issue("", "the document is empty")], source=source)
        if not isinstance(root, MappingNode):
            what = "a list" if isinstance(root, SequenceNode) else "a single value"
            raise ValidationError([Issue("", f"a profile must be a mapping, not {what}", _line(root))], source=source)
        try:
            data: Any = loader.construct_document(root)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line = mark.line + 1 if mark is not None else None
            raise ValidationError([Issue("", f"YAML error: {exc.problem or exc}", line)], source=source) from None
    finally:
        loader.dispose()
    return validate_data(data, source=source, line_of=_line_finder(root), parking_vlan=parking_vlan)


class _Dumper(yaml.SafeDumper):
    """Quotes strings with a colon (MACs, WWNs, portals) so YAML 1.1 readers never see numbers."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if ":" in value and "\n" not in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(p: Profile) -> str:
    """The YAML form of ``p``, keys in model order."""
    text: str = yaml.dump(to_dict(p), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return text
