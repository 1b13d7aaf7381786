"""Server profiles and templates: the model, its YAML and XML codecs, and identity helpers.

This package's names below are the contract the rest of the appliance uses.
"""

from __future__ import annotations

from appliance.domain.profile.claims import IdentityClaim, PoolRef, claimed_identities, pool_refs, with_identities
from appliance.domain.profile.document import MAX_DOCUMENT_BYTES, format_path, from_dict, to_dict
from appliance.domain.profile.model import (
    API_VERSION,
    DEFAULT_PARKING_VLAN,
    Boot,
    BootMode,
    Failover,
    FailoverPolicy,
    FcSource,
    Firmware,
    Hba,
    Identity,
    ImageSource,
    IscsiSource,
    LocalSource,
    Metadata,
    Nic,
    Profile,
    ProfileKind,
    Requirements,
    Spec,
    Vlans,
)
from appliance.domain.profile.sniff import parse_document
from appliance.domain.profile.xml_codec import parse_xml, to_xml
from appliance.domain.profile.yaml_codec import parse_yaml, to_yaml

__all__ = [
    "API_VERSION",
    "DEFAULT_PARKING_VLAN",
    "MAX_DOCUMENT_BYTES",
    "Boot",
    "BootMode",
    "Failover",
    "FailoverPolicy",
    "FcSource",
    "Firmware",
    "Hba",
    "Identity",
    "IdentityClaim",
    "ImageSource",
    "IscsiSource",
    "LocalSource",
    "Metadata",
    "Nic",
    "PoolRef",
    "Profile",
    "ProfileKind",
    "Requirements",
    "Spec",
    "Vlans",
    "claimed_identities",
    "format_path",
    "from_dict",
    "parse_document",
    "parse_xml",
    "parse_yaml",
    "pool_refs",
    "to_dict",
    "to_xml",
    "to_yaml",
    "with_identities",
]
