"""Ray's GCS memory against task events: many small actor calls with task events on, then off.

The GCS keeps the events of the last 100 000 tasks (RAY_task_events_max_num_task_in_gcs). A live
run of 40 streams makes ~50 actor calls a second (next_batch per decoder, process, write,
record_states), so with task events on the GCS grows for its first half hour; the runtime's hot
calls run with enable_task_events=False (streamvl/runtime/actors.py).

    python bench/bench_task_events.py [--calls 50000]

Each setting in a fresh local Ray (a child process); prints gcs_server RssAnon every calls/5.
Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = r"""
import sys, time, psutil, ray
n, events = int(sys.argv[1]), sys.argv[2] == "on"
from streamvl.runtime.cluster import keep_on_loopback  # 127.0.0.1 only
keep_on_loopback()
ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", _node_ip_address="127.0.0.1")
gcs = next(p for p in psutil.Process().children(recursive=True) if p.name() == "gcs_server")
def anon():
    with open(f"/proc/{gcs.pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("RssAnon")) / 1024
@ray.remote(num_cpus=0.1)
class Echo:
    def f(self, x):
        return x
actor = Echo.options(enable_task_events=events).remote()
ray.get(actor.f.remote(0))
time.sleep(2)
out = [anon()]
for _ in range(5):
    ray.get([actor.f.remote(i) for i in range(n // 5)])
    time.sleep(1.5)  # task events reach the GCS about every second
    out.append(anon())
print(" ".join(f"{x:.1f}" for x in out))
ray.shutdown()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50000)
    args = parser.parse_args()
    print(f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}; gcs_server RssAnon MiB after 0, 1/5 ... 5/5 of "
          f"{args.calls} actor calls")
    got = {}
    for setting in ("on", "off"):
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.calls), setting], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"bench child failed:\n{out.stderr[-2000:]}")
        got[setting] = [float(x) for x in out.stdout.strip().splitlines()[-1].split()]
        print(f"task events {setting:<3}  {' / '.join(f'{x:.0f}' for x in got[setting])}", flush=True)
    grow = {k: v[-1] - v[0] for k, v in got.items()}
    print(f"growth: on {grow['on']:+.1f} MiB ({grow['on'] * 1024 / args.calls:.2f} KiB per call), off {grow['off']:+.1f} MiB")


if __name__ == "__main__":
    main()
