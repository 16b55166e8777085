"""What changed between two policies, per service and route, in the policy's own words.

Each route's effective settings (after defaults → service → route merging) are flattened
to dotted keys; a change every route of a service shares is reported once for the service
("payments: resilience.retries.attempts 2 → 3"), anything else per route.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from pydantic import BaseModel

from irl_extproc.policy.load import LoadedPolicy
from irl_extproc.policy.resolve import ResolvedRoute, resolve_routes

Flat = dict[str, str]
MISSING = "(unset)"


def _flatten(value: Any, prefix: str, out: Flat) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif value is not None and value != {}:
        out[prefix] = _show(value)


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, BaseModel):
        return _show(value.model_dump(mode="json", exclude_none=True))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def route_settings(route: ResolvedRoute) -> Flat:
    out: Flat = {}
    _flatten(route.upstream, "upstream", out)
    _flatten(route.match, "match", out)
    _flatten(route.resilience, "resilience", out)
    out["sentinel"] = "off" if route.sentinel is None else "on"
    if route.sentinel is not None:
        for field in dataclasses.fields(route.sentinel):
            value = getattr(route.sentinel, field.name)
            if field.name in ("request", "response"):
                out[f"sentinel.{field.name}"] = _show([{type(c).name: c} for c in value])
            else:
                out[f"sentinel.{field.name}"] = _show(value)
    return out


@dataclasses.dataclass(frozen=True)
class Change:
    where: str
    key: str
    old: str
    new: str

    def __str__(self) -> str:
        return f"{self.where}: {self.key} {self.old} → {self.new}"


def _routes(policy: LoadedPolicy) -> dict[str, dict[str, Flat]]:
    services: dict[str, dict[str, Flat]] = {name: {} for name in policy.document.services}
    for route in resolve_routes(policy.document):
        services[route.service][route.name] = route_settings(route)
    return services


def semantic_diff(old: LoadedPolicy, new: LoadedPolicy) -> list[str]:
    before, after = _routes(old), _routes(new)
    lines: list[str] = []
    for service in sorted(before.keys() - after.keys()):
        lines.append(f"{service}: service removed")
    for service in sorted(after.keys() - before.keys()):
        lines.append(f"{service}: service added ({len(after[service])} routes)")
    for service in [s for s in after if s in before]:
        lines.extend(_service_diff(service, before[service], after[service]))
    return lines


def _service_diff(service: str, before: dict[str, Flat], after: dict[str, Flat]) -> list[str]:
    lines = [f"{service}/{r}: route removed" for r in before if r not in after]
    lines += [f"{service}/{r}: route added" for r in after if r not in before]
    common = [r for r in after if r in before]
    per_route = {r: _changes(before[r], after[r]) for r in common}
    shared = set.intersection(*(set(c) for c in per_route.values())) if per_route else set()
    for key, old_value, new_value in sorted(shared):
        lines.append(str(Change(service, key, old_value, new_value)))
    for route, changes in per_route.items():
        lines += [str(Change(f"{service}/{route}", *c)) for c in sorted(set(changes) - shared)]
    return lines


def _changes(before: Flat, after: Flat) -> list[tuple[str, str, str]]:
    keys = sorted(before.keys() | after.keys())
    return [
        (k, before.get(k, MISSING), after.get(k, MISSING))
        for k in keys
        if before.get(k, MISSING) != after.get(k, MISSING)
    ]


def text_diff(old_text: str, new_text: str, old_name: str, new_name: str) -> list[str]:
    return list(difflib.unified_diff(old_text.splitlines(), new_text.splitlines(), old_name, new_name, lineterm=""))
