"""A FastAPI app limited by tollgate: a dependency per route, the middleware
for a path prefix, heartbeats."""

import os

from fastapi import Depends, FastAPI

from tollgate_client.fastapi import Limiter, PathRule, RateLimitMiddleware

# Generous timeout: 64 concurrent requests on a busy 2-core machine.
limiter = Limiter(os.environ["TOLLGATE_URL"], admin_url=os.environ["TOLLGATE_ADMIN_URL"], timeout=5)
app = FastAPI()
app.add_middleware(RateLimitMiddleware, limiter=limiter,
                   rules=[PathRule("/mw", "10/m", key=lambda request: "everyone")])


@app.get("/ready")
async def ready():
    return {"ready": True}


@app.get("/limited", dependencies=[Depends(limiter.limit("10/m"))])
async def limited():
    return {"pid": os.getpid()}


@app.get("/wait", dependencies=[Depends(limiter.limit("2/m"))])
async def wait():
    return {"ok": True}


@app.get("/mw/items")
async def items():
    return {"items": []}


@app.post("/hb/{who}")
async def heartbeat(who: str):
    return {"recorded": await limiter.client.heartbeat(who)}
