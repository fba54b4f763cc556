"""Pure-ASGI middleware shared by all services."""

from flightdeck_common.middleware.access_log import AccessLogMiddleware
from flightdeck_common.middleware.body_limit import BodySizeLimitMiddleware
from flightdeck_common.middleware.body_timeout import BodyReadTimeoutMiddleware
from flightdeck_common.middleware.catch_all import CatchAllMiddleware
from flightdeck_common.middleware.json_depth import JsonDepthLimitMiddleware
from flightdeck_common.middleware.request_id import RequestIdMiddleware
from flightdeck_common.middleware.security_headers import SecurityHeadersMiddleware

__all__ = [
    "AccessLogMiddleware",
    "BodyReadTimeoutMiddleware",
    "BodySizeLimitMiddleware",
    "CatchAllMiddleware",
    "JsonDepthLimitMiddleware",
    "RequestIdMiddleware",
    "SecurityHeadersMiddleware",
]
