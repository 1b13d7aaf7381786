"""Job kinds and their steps, one module per kind."""

from appliance.engine.model import JobKind
from appliance.engine.steps.failover import FAILOVER
from appliance.engine.steps.firmware import FIRMWARE_UPDATE
from appliance.engine.steps.host import HOST_RELEASE, HOST_STAMP
from appliance.engine.steps.stamp import STAMP
from appliance.engine.steps.unstamp import UNSTAMP

KINDS: dict[str, JobKind] = {STAMP.name: STAMP, UNSTAMP.name: UNSTAMP, FAILOVER.name: FAILOVER,
                             HOST_STAMP.name: HOST_STAMP, HOST_RELEASE.name: HOST_RELEASE,
                             FIRMWARE_UPDATE.name: FIRMWARE_UPDATE}

# DR jobs live with the rest of DR (appliance.dr); imported last, as they use the stamp modules above.
from appliance.dr.jobs import KINDS as _DR_KINDS  # noqa: E402

KINDS.update(_DR_KINDS)

__all__ = ["FAILOVER", "FIRMWARE_UPDATE", "HOST_RELEASE", "HOST_STAMP", "KINDS", "STAMP", "UNSTAMP"]
