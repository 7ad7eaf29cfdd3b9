"""An independent client for tollgate's Envoy services: grpcio with the Envoy
stubs that the `xds-protos` package generates from envoyproxy/data-plane-api
(nothing here is built from tollgate's code).

Usage: envoy_client.py HOST:PORT
Asks the rate limit service three times for one descriptor (domain "py",
remote_address=192.0.2.50), then ext_authz twice for POST /login from
203.0.113.77, and prints one JSON object with what it saw.
"""

import json
import sys

import grpc
from envoy.config.core.v3 import address_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc


def rls(channel):
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    entry = ratelimit_pb2.RateLimitDescriptor.Entry(key="remote_address", value="192.0.2.50")
    request = rls_pb2.RateLimitRequest(
        domain="py", descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=[entry])]
    )
    seen = []
    for _ in range(3):
        r = stub.ShouldRateLimit(request, timeout=5)
        s = r.statuses[0]
        seen.append(
            {
                "overall": rls_pb2.RateLimitResponse.Code.Name(r.overall_code),
                "code": rls_pb2.RateLimitResponse.Code.Name(s.code),
                "remaining": s.limit_remaining,
                "requests_per_unit": s.current_limit.requests_per_unit,
                "unit": rls_pb2.RateLimitResponse.RateLimit.Unit.Name(s.current_limit.unit),
                "reset_seconds": s.duration_until_reset.seconds,
                "headers": {h.key: h.value for h in r.response_headers_to_add},
            }
        )
    return seen


def ext_authz(channel):
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    source = attribute_context_pb2.AttributeContext.Peer(
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="203.0.113.77", port_value=5555)
        )
    )
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method="POST", path="/login", host="app.example", headers={"user-agent": "py"}
    )
    request = external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            source=source, request=attribute_context_pb2.AttributeContext.Request(http=http)
        )
    )
    seen = []
    for _ in range(2):
        r = stub.Check(request, timeout=5)
        if r.HasField("denied_response"):
            d = r.denied_response
            seen.append(
                {
                    "grpc_code": r.status.code,
                    "http_status": d.status.code,
                    "headers": {h.header.key: h.header.value for h in d.headers},
                }
            )
        else:
            ok = r.ok_response
            seen.append(
                {
                    "grpc_code": r.status.code,
                    "http_status": 200,
                    "headers": {h.header.key: h.header.value for h in ok.response_headers_to_add},
                }
            )
    return seen


def main():
    with grpc.insecure_channel(sys.argv[1]) as channel:
        print(json.dumps({"rls": rls(channel), "ext_authz": ext_authz(channel)}))


if __name__ == "__main__":
    main()
