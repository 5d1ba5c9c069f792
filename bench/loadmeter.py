"""How busy the machine was with other work while a benchmark ran.

The 1-minute load average counts the benchmark itself (2 busy threads on 2 cores read as ~2),
so it cannot tell a quiet machine from a shared one. `Meter` reads the CPU time of the whole
machine (/proc/stat) and of this process and its children (getrusage) over a timed run: what
remains is other work, in cores. A run is flagged when others used more than a quarter of a
core on average. The load averages are recorded too."""
from __future__ import annotations

import os
import resource
import time

OTHER_CORES_LIMIT = 0.25


def _machine_busy_s() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


class Meter:
    def __enter__(self) -> "Meter":
        self.load_before = os.getloadavg()[0]
        self.t, self.busy, self.own = time.perf_counter(), _machine_busy_s(), _own_cpu_s()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.t
        others = (_machine_busy_s() - self.busy) - (_own_cpu_s() - self.own)
        self.load_after = os.getloadavg()[0]
        self.other_cores = max(0.0, others / wall) if wall > 0 else 0.0
        self.loaded = self.other_cores > OTHER_CORES_LIMIT

    def record(self) -> dict:
        return {"load": [round(self.load_before, 2), round(self.load_after, 2)],
                "other_cores": round(self.other_cores, 3), "loaded": self.loaded}
