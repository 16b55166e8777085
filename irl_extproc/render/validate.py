"""Ask the pinned Envoy binary whether a rendered config is valid (`envoy --mode validate`).

A config Envoy accepts with a "deprecated" warning is treated as invalid: it breaks on the
next Envoy upgrade, so it must not reach GitOps.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from irl_extproc.protogen import envoy_binary

VALIDATE_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class EnvoyVerdict:
    ok: bool
    problems: tuple[str, ...]  # error and deprecation lines from Envoy's output


def validate_with_envoy(config: Path) -> EnvoyVerdict:
    completed = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(config), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=VALIDATE_TIMEOUT_SECONDS,
        check=False,
    )
    output = (completed.stdout + completed.stderr).splitlines()
    problems = tuple(
        line
        for line in output
        if "deprecat" in line.lower() or "[warning]" in line or "[error]" in line or "[critical]" in line
    )
    if completed.returncode != 0 and not problems:
        problems = tuple(output[-5:]) or (f"envoy exited with {completed.returncode}",)
    return EnvoyVerdict(ok=completed.returncode == 0 and not problems, problems=problems)
