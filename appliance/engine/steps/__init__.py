"""Job kinds and their steps, one module per kind."""

from appliance.engine.model import JobKind
from appliance.engine.steps.failover import FAILOVER
from appliance.engine.steps.stamp import STAMP
from appliance.engine.steps.unstamp import UNSTAMP

KINDS: dict[str, JobKind] = {STAMP.name: STAMP, UNSTAMP.name: UNSTAMP, FAILOVER.name: FAILOVER}

__all__ = ["FAILOVER", "KINDS", "STAMP", "UNSTAMP"]
