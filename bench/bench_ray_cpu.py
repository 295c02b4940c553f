"""Where the cores go during a 2-worker Ray Train run: CPU used per process group, from /proc, in the steady
middle of training (issue 15's scaling target: on a machine with as many cores as workers, every cycle that Ray's
own processes take stalls one rank, and the other waits for it at the next collective).

    python bench/bench_ray_cpu.py [--rounds 48] [--base-width 32] [--poll 0.1 1.0]

Runs ``emonet train`` (the default config of bench_ray_train.py, 2 workers, 1 thread each) once per ``--poll``
value (Ray Train's worker poll, ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``), samples every process's CPU time once a
second, and prints, over the window where both workers are computing (its first and last 10 % left out), the
cores each group used: the two workers, Ray's other processes by name, and the idle remainder. Linux only.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from bench_ray_train import make_cfg, synth_shards

from emonet_dist.train import launch
from emonet_dist.train.launch import run_training

TICK = os.sysconf("SC_CLK_TCK")
GROUPS = (("RayTrainWorker", "train workers"), ("TrainController", "Train controller"),
          ("gcs_server", "GCS"), ("raylet", "raylet"), ("dashboard/agent.py", "dashboard agent"),
          ("dashboard/dashboard.py", "dashboard"), ("runtime_env", "runtime-env agent"),
          ("log_monitor", "log monitor"), ("monitor.py", "monitor"), ("ray::", "other Ray workers"))


def group_of(pid: int, cmdline: str) -> str:
    if pid == os.getpid():
        return "driver (this process)"
    name = next((name for key, name in GROUPS if key in cmdline), "")
    if name == "other Ray workers":  # an actor's or idle worker's process title: ray::<class or IDLE>
        return cmdline.split()[0].split(".")[0]
    return name or f"other: {Path(cmdline.split()[0]).name if cmdline.strip() else '?'}"


def snapshot() -> tuple[float, float, dict[int, tuple[str, float]]]:
    """(wall time, idle seconds of the machine, pid -> (group, CPU seconds))."""
    procs = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended between the listing and the read
        fields = stat.rsplit(")", 1)[1].split()
        procs[int(entry.name)] = (group_of(int(entry.name), cmd), (int(fields[11]) + int(fields[12])) / TICK)
    idle = int(Path("/proc/stat").read_text().split("\n")[0].split()[4]) / TICK
    return time.monotonic(), idle, procs


def sample_during(fn) -> list:
    """Run ``fn`` in this thread while another takes a :func:`snapshot` every second; the snapshots."""
    shots, done = [], threading.Event()

    def sampler():
        while not done.is_set():
            shots.append(snapshot())
            done.wait(1.0)

    t = threading.Thread(target=sampler, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return shots


def steady_usage(shots: list) -> tuple[float, dict[str, float]]:
    """Cores per group between the first and last second in which the workers together used more than 1.5
    cores, without the first and last 10 % of that window; and the window's length in seconds."""
    def workers(a, b):
        return sum(cpu - a[2].get(pid, ("", cpu))[1] for pid, (g, cpu) in b[2].items()
                   if g == "train workers") / (b[0] - a[0])

    busy = [i for i in range(1, len(shots)) if workers(shots[i - 1], shots[i]) > 1.5]
    if len(busy) < 10:
        raise SystemExit(f"the workers were busy together for only {len(busy)} s: give more --rounds")
    lo, hi = busy[0], busy[-1]
    cut = (hi - lo) // 10
    a, b = shots[lo + cut], shots[hi - cut]
    wall = b[0] - a[0]
    use: dict[str, float] = defaultdict(float)
    for pid, (group, cpu) in b[2].items():
        use[group] += (cpu - a[2].get(pid, (group, cpu))[1]) / wall  # a process started inside the window: 0
    use["idle"] = (b[1] - a[1]) / wall
    return wall, dict(use)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=48)
    ap.add_argument("--base-width", type=int, default=32)
    ap.add_argument("--poll", type=float, nargs="+", default=[0.1], help="Ray Train worker poll intervals, s")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs; 2 Ray Train workers x 1 thread, base width {args.base_width}, {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        shards = synth_shards(None, Path(tmp))
        results = {}
        for poll in args.poll:
            launch.RAY_ENV["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(poll)  # what the run's Ray instance gets
            cfg = make_cfg(shards, Path(tmp) / f"runs-{poll}", args.rounds, args.base_width, 2)
            box = {}
            shots = sample_during(lambda: box.update(r=run_training(cfg)))  # noqa: B023 (called at once)
            wall, use = steady_usage(shots)
            results[poll] = (box["r"].metrics["train_utt_per_s"], wall, use)
            import ray

            ray.shutdown()  # the next poll value needs a new instance
    groups = sorted({g for _, _, use in results.values() for g, v in use.items() if v >= 0.002},
                    key=lambda g: (g == "idle", g))
    print("\ncores used in the steady window (2 = the whole machine; groups under 0.002 cores left out)")
    print(f"  {'':28s}" + "".join(f"  poll {p:>5.2f} s" for p in results))
    for g in groups:
        print(f"  {g:28s}" + "".join(f"  {use.get(g, 0.0):12.3f}" for _, _, use in results.values()))
    print(f"  {'window, s':28s}" + "".join(f"  {wall:12.1f}" for _, wall, _ in results.values()))
    print(f"  {'train utt/s':28s}" + "".join(f"  {rate:12.2f}" for rate, _, _ in results.values()))


if __name__ == "__main__":
    main()
