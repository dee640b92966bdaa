"""Admin routes of the endpoint: see and pin the orchestrator's plan.

``GET /admin/plan`` returns the current (real) deployment, the target plan, the replicas with their
states, the last decisions (inputs, forecast, plan, reason, outcome) and the last switches.
``POST /admin/plan`` pins a plan (it overrides the planner until unpinned) or unpins:

.. code-block:: json

    {"plan": {"replicas": [{"variant": "bf16-seq8", "node": "node0", "device_ids": [0]}],
              "routing": {"short-in/short-out": {"bf16-seq8": 1.0}}}}
    {"unpin": true}

Both routes take the server's API-key dependency (``auth``), so they need
``Authorization: Bearer <key>`` when the server has a key. Errors are raised as
:class:`~oserve.errors.ClientError` subclasses, which the server's exception handlers turn into the
OpenAI error envelope.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oserve.errors import ConfigError, InvalidRequestError, NoReplicaReadyError
from oserve.types import Plan

if TYPE_CHECKING:  # the routes only call methods of the orchestrator they are given
    from oserve.control.orchestrator import Orchestrator

__all__ = ["PinRequest", "make_admin_router"]


class PinRequest(BaseModel):
    """Body of ``POST /admin/plan``: exactly one of ``plan`` (pin it) or ``unpin: true``."""

    model_config = ConfigDict(extra="forbid")
    plan: Plan | None = Field(None, description="the plan to pin")
    unpin: bool = Field(False, description="give control back to the planner")


def make_admin_router(orchestrator: Orchestrator | Callable[[], Orchestrator | None], *,
                      auth: Callable[..., Any] | None = None, last: int = 10) -> APIRouter:
    """Build the ``/admin/plan`` routes.

    Args:
        orchestrator: the orchestrator, or a callable returning it (None while it is not built
            yet: the routes then answer 503).
        auth: a FastAPI dependency that raises ``AuthenticationError`` on a missing or wrong API
            key (the server's API-key check); None: no check.
        last: decisions and switches returned by ``GET``.

    Returns:
        An ``APIRouter`` to ``app.include_router(...)``.
    """
    deps = [Depends(auth)] if auth is not None else []
    router = APIRouter(dependencies=deps)

    def get_orch() -> Orchestrator:
        orch = orchestrator() if callable(orchestrator) else orchestrator
        if orch is None:
            raise NoReplicaReadyError("the orchestrator is not running", retry_after_s=1.0)
        return orch

    @router.get("/admin/plan")
    async def get_plan() -> JSONResponse:
        return JSONResponse(get_orch().status(last=last))

    @router.post("/admin/plan")
    async def post_plan(request: Request) -> JSONResponse:
        orch = get_orch()
        raw = await request.body()
        try:
            body = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequestError(f"body is not valid JSON: {exc}", param="body") from exc
        try:
            req = PinRequest.model_validate(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            param = ".".join(str(p) for p in err.get("loc", ())) or "body"
            raise InvalidRequestError(f"invalid {param}: {err.get('msg')}", param=param) from exc
        if (req.plan is None) == (not req.unpin):
            raise InvalidRequestError("give exactly one of 'plan' or 'unpin': true", param="plan")
        try:
            decision = await orch.unpin() if req.unpin else await orch.pin(req.plan)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise InvalidRequestError(str(exc), param=exc.field or "plan") from exc
        return JSONResponse({"pinned": orch.controller.pinned is not None, "decision": decision.to_dict()})

    return router
