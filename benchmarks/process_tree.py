"""Running a command and measuring its whole process tree: the one sampler the benchmark scripts share.

psutil samples every process of the tree every 50 ms (RSS summed, and CPU seconds per pid,
kept at each pid's last reading); the rusage of the children this script waited for is read
too, so CPU of processes that ended between two samples is not lost: the CPU figure is the
larger of the two.
"""

from __future__ import annotations

import resource
import subprocess
import threading
import time


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(argv: list[str], cwd: str, env: dict | None = None) -> dict:
    """Run argv (stdout and stderr captured); returns wall s ("s"), CPU s of the tree ("cpu"), peak RSS
    of the tree ("peak_tree") and of its largest process other than the root ("peak_worker"), "out" and
    "err". Raises RuntimeError with the end of stderr when it fails. Runs one command at a time."""
    import psutil

    cpu_before = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    root, done = psutil.Process(proc.pid), threading.Event()
    peak = {"tree": 0, "process": 0}
    cpu: dict[int, float] = {}

    def sample():
        while not done.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                procs = []
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system
                except psutil.Error:
                    continue
                total += rss
                if p.pid != root.pid:  # a worker (Beam SDK worker / Dask worker), not the driver
                    peak["process"] = max(peak["process"], rss)
            peak["tree"] = max(peak["tree"], total)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv[:4])} failed (exit {proc.returncode}):\n{err[-3000:]}")
    waited = _children_cpu() - cpu_before  # the root, and the descendants it waited for
    return {
        "s": seconds,
        "cpu": max(sum(cpu.values()), waited),
        "peak_tree": peak["tree"],
        "peak_worker": peak["process"],
        "out": out,
        "err": err,
    }
