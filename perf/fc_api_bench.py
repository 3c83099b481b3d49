"""Firecracker-API benchmarks, driven by perf/run: `ember-vmm --api-sock` (the ember-fc-api
front) with Ember's test guest, an AF_UNIX HTTP client written here. Prints perf/run's result
lines, each beside its baseline measured in the same run (runs interleaved):
  fc_api_boot_ms       exec of `ember-vmm --api-sock` -> socket up -> PUT /boot-source,
                       PUT /machine-config -> PUT /actions InstanceStart -> the guest's
                       boot-timer write (the VMM's boot_time_us, counted from the exec), next to
                       vmm_start_to_boot_timer: `ember-vmm --config FILE` the same way
  vmm_rss_overhead_fc_api  RSS of the API front (and its launcher helper's private pages) plus
                       the VMM's RSS without guest memory, idle guest, next to vmm_rss_overhead
                       (`ember-vmm --config`, no front)
  fc_api_front_rss     the API front's own share of that, beside the VMM's overhead
Nothing is asserted."""
import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BUILD_DIR = os.environ.get("EMBER_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "build"))
VMM = os.path.join(BUILD_DIR, "bin", "ember-vmm")
TIMEOUT = 30


class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=TIMEOUT)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(self.path)


def put(conn, path, body):
    conn.request("PUT", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    text = response.read()
    if response.status != 204:
        raise RuntimeError(f"PUT {path}: {response.status} {text!r}")


def boot_args(scenario):
    return {"boot_args": f"console=ttyS0 ember.test={scenario}"}


def machine(mem):
    return {"vcpu_count": 1, "mem_size_mib": mem}


def now_us():
    return time.monotonic_ns() // 1000  # CLOCK_MONOTONIC, as --start-time-us wants


def wait_for(predicate, what, proc):
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: the process ended with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {TIMEOUT} s")
        time.sleep(0.0002)


def boot_time_ms(metrics):
    with open(metrics) as f:
        return json.load(f)["boot"]["boot_time_us"] / 1000.0


def api_boot(work, mem):
    sock, metrics = os.path.join(work, "api.sock"), os.path.join(work, "api-metrics.json")
    for path in (sock, metrics):
        if os.path.exists(path):
            os.unlink(path)
    with open(os.path.join(work, "api.out"), "wb") as out:
        proc = subprocess.Popen([VMM, "--api-sock", sock, "--metrics-path", metrics,
                                 "--start-time-us", str(now_us())], stdout=out, stderr=out)
        wait_for(lambda: os.path.exists(sock), "API socket", proc)
        conn = Unix(sock)
        put(conn, "/boot-source", boot_args("hello"))
        put(conn, "/machine-config", machine(mem))
        put(conn, "/actions", {"action_type": "InstanceStart"})
        if proc.wait(timeout=TIMEOUT) != 0:
            raise RuntimeError(f"ember-vmm --api-sock (hello) ended with {proc.returncode}")
        conn.close()
    return boot_time_ms(metrics)


def config_boot(work, config):
    metrics = os.path.join(work, "config-metrics.json")
    if os.path.exists(metrics):
        os.unlink(metrics)
    with open(os.path.join(work, "config.out"), "wb") as out:
        code = subprocess.run([VMM, "--config", config, "--metrics-path", metrics,
                               "--start-time-us", str(now_us())], stdout=out, stderr=out,
                              timeout=TIMEOUT).returncode
    if code != 0:
        raise RuntimeError(f"ember-vmm --config (hello) ended with {code}")
    return boot_time_ms(metrics)


def rss_kib(pid, skip_guest, keys=("Rss:",)):
    """RSS of `pid` in KiB (or the sum of other smaps `keys`), without guest memory when
    `skip_guest`."""
    total, name = 0, ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if fields and "-" in fields[0] and not fields[0].endswith(":"):
                name = fields[5] if len(fields) > 5 else ""
            elif fields and fields[0] in keys:
                if not (skip_guest and "ember-guest-mem" in name):
                    total += int(fields[1])
    return total


def children(pid):
    """(the launcher helper, the VMM) of an API front."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        pids = [int(p) for p in f.read().split()]
    vmm = [p for p in pids if b"--control-fd" in open(f"/proc/{p}/cmdline", "rb").read()]
    helper = [p for p in pids if p not in vmm]
    if len(vmm) != 1 or len(helper) != 1:
        raise RuntimeError(f"the API front's children are not its helper and one VMM: {pids}")
    return helper[0], vmm[0]


def idle_memory(work, config, mem, api):
    """(front MiB, VMM overhead MiB) of an idle guest: with `api`, the front's RSS plus its
    launcher helper's private pages (a fork of the front, sharing the rest), else 0."""
    out_path = os.path.join(work, "idle.out")
    sock = os.path.join(work, "idle.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    with open(out_path, "wb") as out:
        args = [VMM, "--api-sock", sock] if api else [VMM, "--config", config]
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL)
        try:
            if api:
                wait_for(lambda: os.path.exists(sock), "API socket", proc)
                conn = Unix(sock)
                put(conn, "/boot-source", boot_args("idle"))
                put(conn, "/machine-config", machine(mem))
                put(conn, "/actions", {"action_type": "InstanceStart"})
                conn.close()
            wait_for(lambda: b"idle\n" in open(out_path, "rb").read(), "idle guest", proc)
            time.sleep(0.05)  # let the VMM finish handling the guest's last exits
            helper, vmm = children(proc.pid) if api else (None, proc.pid)
            front = 0.0
            if api:
                private = ("Private_Clean:", "Private_Dirty:")
                front = (rss_kib(proc.pid, False) + rss_kib(helper, False, private)) / 1024.0
            return front, rss_kib(vmm, True) / 1024.0
        finally:
            proc.terminate()
            proc.wait(timeout=TIMEOUT)


def line(name, value, unit, base_name, base):
    print(f"{name} {value:.3f} {unit} | {base_name} {base:.3f} {unit} | ratio {value / base:.2f}",
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rss-runs", type=int, default=10)
    parser.add_argument("--mem-mib", type=int, default=128)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("fc_api_bench: /dev/kvm is not usable; skipped", file=sys.stderr)
        return 0
    work = tempfile.mkdtemp(prefix="ember-fc-api-bench-")
    try:
        config = os.path.join(work, "hello.json")
        idle_config = os.path.join(work, "idle.json")
        for path, scenario in ((config, "hello"), (idle_config, "idle")):
            with open(path, "w") as f:
                json.dump({"boot-source": boot_args(scenario),
                           "machine-config": machine(args.mem_mib)}, f)
        api_boot(work, args.mem_mib)  # warm-up: page cache, kernel cache
        config_boot(work, config)
        api_ms, config_ms = [], []
        for run in range(args.runs):
            api_ms.append(api_boot(work, args.mem_mib))
            config_ms.append(config_boot(work, config))
            if args.verbose:
                print(f"run {run}: api {api_ms[-1]:.3f} ms, config {config_ms[-1]:.3f} ms",
                      file=sys.stderr)
        fronts, with_api, without = [], [], []
        for run in range(args.rss_runs):
            front, vmm = idle_memory(work, idle_config, args.mem_mib, True)
            fronts.append(front)
            with_api.append(front + vmm)
            without.append(idle_memory(work, idle_config, args.mem_mib, False)[1])
            if args.verbose:
                print(f"run {run}: front {front:.2f} MiB, VMM {vmm:.2f} MiB, "
                      f"without API {without[-1]:.2f} MiB", file=sys.stderr)
        median = statistics.median
        line("fc_api_boot_ms", median(api_ms), "ms", "vmm_start_to_boot_timer", median(config_ms))
        line("vmm_rss_overhead_fc_api", median(with_api), "MiB", "vmm_rss_overhead",
             median(without))
        line("fc_api_front_rss", median(fronts), "MiB", "vmm_rss_overhead", median(without))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
