"""The XML form of a profile (DESIGN §7), lossless with the YAML form.

``<ServerProfile xmlns="urn:anvil:profile:v1">`` (or ``ServerProfileTemplate``) holds
``<apiVersion>``, ``<metadata>`` and ``<spec>``; element names are the YAML keys; lists
are repeated singular elements in their plural parent (``<nics><nic>``, ``<hbas><hba>``,
``<tagged><vlan>``); label and BIOS maps are ``<entry key="…">value</entry>``. No other
attribute carries data (``xsi:*`` on the root is tolerated). Booleans are ``true`` /
``false``.

Parsing goes through defusedxml with DTDs, entity declarations and external references
forbidden, after a size check; the element → data conversion follows the model
(:mod:`appliance.domain.profile.shape`). A line-recording tree builder gives every
issue the source line of its element.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import defusedxml
import defusedxml.ElementTree as DET

from appliance.domain.profile.document import check_size, format_path, to_dict, validate_data
from appliance.domain.profile.model import DEFAULT_PARKING_VLAN, Loc, Profile, ProfileKind
from appliance.domain.profile.shape import (
    ENTRY,
    ENTRY_KEY,
    ITEM_NAMES,
    NAMESPACE,
    Kind,
    Schema,
    profile_schema,
    resolve,
    union_tag_field,
    union_variants,
)
from appliance.errors import Issue, ValidationError

_NS = "{" + NAMESPACE + "}"
_XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
_INT = re.compile(r"^\s*[-+]?[0-9]+\s*$")
_KINDS = {k.value for k in ProfileKind}


MAX_DEPTH = 32            # a profile nests 7 elements deep
MAX_ELEMENTS = 20_000     # the largest real profile has a few hundred
MAX_ATTRIBUTES = 8        # only <entry key=…> and xsi:* on the root carry any


class _Refused(Exception):
    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.reason)
        self.issue = issue


class _LineTreeBuilder(ET.TreeBuilder):
    """Records the line of every start tag (the defused parser is the pure-Python one, so expat
    is reachable) and stops at the first element past the bounds above, while parsing."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[ET.Element, int] = {}
        self.expat: Any = None
        self._depth = 0
        self._count = 0

    def start(self, tag: Any, attrs: dict[Any, Any]) -> ET.Element:
        line = int(self.expat.CurrentLineNumber) if self.expat is not None else None
        self._depth += 1
        self._count += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(Issue("", f"elements nest deeper than {MAX_DEPTH} levels", line))
        if self._count > MAX_ELEMENTS:
            raise _Refused(Issue("", f"more than {MAX_ELEMENTS} elements; a profile has a few hundred", line))
        if len(attrs) > MAX_ATTRIBUTES:
            raise _Refused(Issue("", f"an element with {len(attrs)} attributes; attributes carry no data here",
                                 line))
        elem = super().start(tag, attrs)
        if line is not None:
            self.lines[elem] = line
        return elem

    def end(self, tag: Any) -> ET.Element:
        self._depth -= 1
        return super().end(tag)


def _parse_tree(data: str | bytes, source: str | None) -> tuple[ET.Element, dict[ET.Element, int]]:
    builder = _LineTreeBuilder()
    parser = DET.XMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    builder.expat = getattr(parser, "parser", None)
    try:
        parser.feed(data)
        root = parser.close()
    except _Refused as exc:
        raise ValidationError([exc.issue], source=source) from None
    except defusedxml.DTDForbidden:
        raise ValidationError(
            [Issue("", "XML document type declarations (DTDs) are not allowed")], source=source
        ) from None
    except defusedxml.EntitiesForbidden:
        raise ValidationError([Issue("", "XML entity declarations are not allowed")], source=source) from None
    except defusedxml.ExternalReferenceForbidden:
        raise ValidationError([Issue("", "XML external references are not allowed")], source=source) from None
    except ET.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else None
        raise ValidationError([Issue("", f"XML syntax error: {exc.msg}", line)], source=source) from None
    return root, builder.lines


class _Decoder:
    """Element tree → plain data, led by the model's shape; collects issues instead of stopping."""

    def __init__(self, lines: dict[ET.Element, int]) -> None:
        self.elem_lines = lines
        self.loc_lines: dict[Loc, int] = {}
        self.issues: list[Issue] = []

    def issue(self, loc: Loc, reason: str, elem: ET.Element) -> None:
        self.issues.append(Issue(format_path(loc), reason, self.elem_lines.get(elem)))

    def line_of(self, loc: Loc) -> int | None:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.loc_lines:
                return self.loc_lines[loc[:end]]
        return None

    def name(self, elem: ET.Element, loc: Loc) -> str | None:
        tag = elem.tag
        if not isinstance(tag, str) or not tag.startswith(_NS):
            shown = tag.split("}", 1)[-1] if isinstance(tag, str) else "?"
            self.issue(loc, f"element <{shown}> is not in namespace {NAMESPACE}", elem)
            return None
        return tag[len(_NS) :]

    def no_attributes(self, elem: ET.Element, loc: Loc, allowed: frozenset[str] = frozenset()) -> None:
        for attr in elem.attrib:
            if attr not in allowed:
                self.issue(loc, f'unexpected attribute "{attr}" (attributes carry no data here)', elem)

    def no_text(self, elem: ET.Element, loc: Loc) -> None:
        texts = [elem.text] + [child.tail for child in elem]
        if any(t and t.strip() for t in texts):
            self.issue(loc, "unexpected text (expected only elements)", elem)

    def decode(self, elem: ET.Element, schema: Schema, loc: Loc) -> Any:
        self.loc_lines[loc] = self.elem_lines.get(elem, 0) or self.loc_lines.get(loc[:-1], 0)
        shape = resolve(schema)
        if shape.kind is Kind.OBJECT:
            self.no_attributes(elem, loc)
            return self.decode_object(elem, shape.schema["properties"], loc)
        if shape.kind is Kind.UNION:
            self.no_attributes(elem, loc)
            return self.decode_union(elem, shape.schema, loc)
        if shape.kind is Kind.LIST:
            self.no_attributes(elem, loc)
            return self.decode_list(elem, shape.schema["items"], loc)
        if shape.kind is Kind.MAP:
            self.no_attributes(elem, loc)
            return self.decode_map(elem, loc)
        return self.decode_leaf(elem, shape.kind, loc)

    def decode_object(self, elem: ET.Element, props: Schema, loc: Loc) -> dict[str, Any]:
        self.no_text(elem, loc)
        out: dict[str, Any] = {}
        for child in elem:
            name = self.name(child, loc)
            if name is None:
                continue
            where = (*loc, name)
            if name not in props or (loc == () and name == "kind"):
                why = " (the kind is the root element's name)" if name == "kind" and loc == () else ""
                self.issue(where, f"unknown element{why}", child)
            elif name in out:
                self.issue(where, "appears twice", child)
            else:
                out[name] = self.decode(child, props[name], where)
        return out

    def decode_union(self, elem: ET.Element, schema: Schema, loc: Loc) -> dict[str, Any]:
        shape = resolve(schema)
        field = union_tag_field(shape)
        variants = union_variants(shape)
        tag_elem = next((c for c in elem if c.tag == _NS + field), None)
        tag = (tag_elem.text or "").strip() if tag_elem is not None else None
        if tag in variants:
            return self.decode_object(elem, variants[tag]["properties"], loc)
        # Unknown or missing tag: keep the children as text so validation names the problem.
        self.no_text(elem, loc)
        out: dict[str, Any] = {}
        for child in elem:
            name = self.name(child, loc)
            if name is not None:
                out[name] = child.text or ""
        return out

    def decode_list(self, elem: ET.Element, items: Schema, loc: Loc) -> list[Any]:
        self.no_text(elem, loc)
        item_name = ITEM_NAMES.get(str(loc[-1]), "item")
        out: list[Any] = []
        for child in elem:
            name = self.name(child, (*loc, len(out)))
            if name is None:
                continue
            if name != item_name:
                self.issue((*loc, len(out)), f"unexpected element <{name}> (expected <{item_name}>)", child)
                continue
            out.append(self.decode(child, items, (*loc, len(out))))
        return out

    def decode_map(self, elem: ET.Element, loc: Loc) -> dict[str, str]:
        self.no_text(elem, loc)
        out: dict[str, str] = {}
        for child in elem:
            name = self.name(child, loc)
            if name is None:
                continue
            if name != ENTRY:
                self.issue(loc, f"unexpected element <{name}> (expected <{ENTRY}>)", child)
                continue
            self.no_attributes(child, loc, frozenset({ENTRY_KEY}))
            key = child.get(ENTRY_KEY)
            if key is None:
                self.issue(loc, f'<{ENTRY}> needs a "{ENTRY_KEY}" attribute', child)
                continue
            where = (*loc, key)
            self.loc_lines[where] = self.elem_lines.get(child, 0)
            if len(child):
                self.issue(where, "unexpected element inside a map entry", child)
            if key in out:
                self.issue(where, "appears twice", child)
            out[key] = child.text or ""
        return out

    def decode_leaf(self, elem: ET.Element, kind: Kind, loc: Loc) -> Any:
        self.no_attributes(elem, loc)
        if len(elem):
            self.issue(loc, "unexpected element inside a value", elem[0])
        text = elem.text or ""
        if kind is Kind.INT and _INT.match(text):
            return int(text)
        if kind is Kind.BOOL and text.strip() in ("true", "false"):
            return text.strip() == "true"
        return text  # a wrong type is left for validation to report


def parse_xml(data: str | bytes, *, source: str | None = None,
              parking_vlan: int | None = DEFAULT_PARKING_VLAN) -> Profile:
    """Parse and validate an XML profile; raises ValidationError with every issue (and lines).

    ``parking_vlan`` is the appliance's configured one (``network.parking_vlan``); None skips that rule.
    """
    check_size(data, source=source)
    root, lines = _parse_tree(data, source)
    decoder = _Decoder(lines)
    tag = root.tag if isinstance(root.tag, str) else ""
    local = tag.split("}", 1)[-1]
    if not tag.startswith(_NS):
        decoder.issue((), f"the root element <{local}> must be in namespace {NAMESPACE}", root)
    if local not in _KINDS:
        decoder.issue((), f"unknown root element <{local}> (expected ServerProfile or ServerProfileTemplate)", root)
    if decoder.issues:
        raise ValidationError(decoder.issues, source=source)
    decoder.loc_lines[()] = lines.get(root, 1)
    decoder.no_attributes(root, (), frozenset(a for a in root.attrib if a.startswith(_XSI)))
    body = decoder.decode_object(root, profile_schema()["properties"], ())
    data_ = {"apiVersion": body.pop("apiVersion", None), "kind": local, **body}
    if data_["apiVersion"] is None:
        del data_["apiVersion"]
    try:
        profile = validate_data(data_, source=source, line_of=decoder.line_of, parking_vlan=parking_vlan)
    except ValidationError as exc:
        raise ValidationError(decoder.issues + exc.issues, source=source) from None
    if decoder.issues:
        raise ValidationError(decoder.issues, source=source)
    return profile


# Elements are built with bare names and the root declares the default namespace:
# ElementTree's ``default_namespace`` refuses the unqualified ``key`` attribute.
def _encode(parent: ET.Element, name: str, value: Any, schema: Schema) -> None:
    elem = ET.SubElement(parent, name)
    shape = resolve(schema)
    if shape.kind is Kind.OBJECT:
        _encode_fields(elem, value, shape.schema["properties"])
    elif shape.kind is Kind.UNION:
        tag = value[union_tag_field(shape)]
        _encode_fields(elem, value, union_variants(shape)[tag]["properties"])
    elif shape.kind is Kind.LIST:
        for item in value:
            _encode(elem, ITEM_NAMES.get(name, "item"), item, shape.schema["items"])
    elif shape.kind is Kind.MAP:
        for key, val in value.items():
            ET.SubElement(elem, ENTRY, {ENTRY_KEY: key}).text = val
    elif isinstance(value, bool):
        elem.text = "true" if value else "false"
    else:
        elem.text = str(value)


def _encode_fields(elem: ET.Element, data: dict[str, Any], props: Schema) -> None:
    for key, value in data.items():
        _encode(elem, key, value, props[key])


def to_xml(p: Profile) -> str:
    """The XML form of ``p`` (UTF-8 declaration, two-space indent)."""
    data = to_dict(p)
    root = ET.Element(data.pop("kind"), {"xmlns": NAMESPACE})
    _encode_fields(root, data, profile_schema()["properties"])
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"
