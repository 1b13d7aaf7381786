"""``python -m appliance.firstboot``: the same as ``anvil-firstboot``."""

import sys

from appliance.firstboot.setup import main

sys.exit(main())
