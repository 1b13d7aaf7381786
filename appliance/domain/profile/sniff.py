"""Pick the codec for a document: XML or YAML (JSON is read as YAML)."""

from __future__ import annotations

from appliance.domain.profile.document import check_size
from appliance.domain.profile.model import DEFAULT_PARKING_VLAN, Profile
from appliance.domain.profile.xml_codec import parse_xml
from appliance.domain.profile.yaml_codec import parse_yaml

_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def looks_like_xml(data: str | bytes) -> bool:
    """True if the first character after any byte-order mark and whitespace is ``<``."""
    if isinstance(data, bytes):
        head = data[:4096]
        for bom in _BOMS:
            if head.startswith(bom):
                if bom != _BOMS[0]:  # UTF-16: decode enough to look
                    return head.decode("utf-16", "ignore").lstrip("\ufeff \t\r\n").startswith("<")
                head = head[len(bom) :]
        return head.lstrip(b" \t\r\n").startswith(b"<")
    return data[:4096].lstrip("\ufeff \t\r\n").startswith("<")


def parse_document(data: str | bytes, *, source: str | None = None, content_type: str | None = None,
                   parking_vlan: int | None = DEFAULT_PARKING_VLAN) -> Profile:
    """Parse a profile as XML if ``content_type`` says XML or the text starts with ``<``, else as YAML/JSON.

    ``parking_vlan`` is the appliance's configured one (``network.parking_vlan``), which no
    NIC may use; None skips that rule.
    """
    check_size(data, source=source)
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media.endswith("xml"):
        return parse_xml(data, source=source, parking_vlan=parking_vlan)
    if media and ("yaml" in media or "json" in media):
        return parse_yaml(data, source=source, parking_vlan=parking_vlan)
    if not looks_like_xml(data):
        return parse_yaml(data, source=source, parking_vlan=parking_vlan)
    # Whitespace before an XML declaration is a syntax error to expat; a pasted document often has some.
    if isinstance(data, str):
        data = data.lstrip("\ufeff \t\r\n")
    elif not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        data = data.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    return parse_xml(data, source=source, parking_vlan=parking_vlan)
