"""Transport resilience settings (timeouts, retries, breakers, ...) rendered into Envoy/Istio.

Every field is optional so the same model layers defaults → service → route.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from irl_extproc.policy.units import Duration


class Timeouts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request: Duration | None = Field(None, description="whole request, all retries included")
    per_try: Duration | None = None
    idle: Duration | None = None
    connect: Duration | None = None


class Resilience(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeouts: Timeouts | None = None
