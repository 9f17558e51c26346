"""A local Omnisend-compatible HTTP server for tests, the demo and benchmarks (stdlib only).

    with OmnisendServer(api_keys=("test-key",)) as srv:
        requests.post(f"{srv.url}/api/contacts", ...)
        srv.contacts()

Never imported by the installed target.
"""

from .api import RequestLogEntry
from .faults import FaultRule
from .server import OmnisendServer

__all__ = ["FaultRule", "OmnisendServer", "RequestLogEntry"]
