"""RSS and CPU time of processes, read from /proc (Linux), sampled while a load runs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    # Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # the process ended while we looked
            if parent == pid:
                found.append(int(entry.name))
    return sorted(found)


@dataclass
class Sampler:
    """CPU share per component over a window, and RSS samples per process."""

    components: dict[str, list[int]]  # e.g. {"envoy": [pid], "irl": [pid, pid]}
    rss: dict[int, list[float]] = field(default_factory=dict)
    _cpu_start: dict[str, float] = field(default_factory=dict)

    def _cpu(self, name: str) -> float:
        return sum(cpu_seconds(pid) for pid in self.components[name])

    def start(self) -> None:
        self._cpu_start = {name: self._cpu(name) for name in self.components}

    def sample(self) -> None:
        for pids in self.components.values():
            for pid in pids:
                self.rss.setdefault(pid, []).append(rss_mb(pid))

    def cpu_percent(self, seconds: float) -> dict[str, float]:
        return {name: 100 * (self._cpu(name) - start) / seconds for name, start in self._cpu_start.items()}

    def max_rss(self, name: str) -> dict[int, float]:
        return {pid: max(self.rss.get(pid, [rss_mb(pid)])) for pid in self.components[name]}
