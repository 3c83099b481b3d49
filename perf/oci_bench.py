"""ember-runtime benchmarks, driven by perf/run (needs root, containerd, runc). Prints perf/run's
result lines, each beside its runc baseline measured in the same run, runs interleaved:
  oci_create_start_ms   `ember-runtime create` + `start` of one bundle, the guest image already
                        cached: create returns once the VM's agent is ready, start once the
                        process runs; next to `runc create` + `start` of the same bundle
                        (and oci_create_start_unjailed_ms: the VMM not through ember-jailer)
  ctr_run_to_exit_ms    `ctr run --rm` of a busybox image to the container's exit, with
                        ember-runtime as the runc binary, next to `ctr run --rm` with runc,
                        through one containerd started here
The container's process is the test guest's agent (no Linux guest runs on these machines):
its `echo` builtin, where runc runs busybox's echo. Guest-side times here are the emulating
KVM's, not hardware's. Nothing is asserted."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import oci_runtime_support as oci  # noqa: E402  (the tests' image, containerd and config)


def make_bundle(path):
    """A bundle of busybox-static: `runc spec`'s config.json, no terminal, process echo."""
    rootfs = os.path.join(path, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    for applet in ("sh", "echo"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    subprocess.run(["runc", "spec", "--bundle", path], check=True)
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    config["process"]["args"] = ["echo", "bench"]
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)


def create_start(runtime, root, bundle, container_id, env):
    """Milliseconds from create to start's return; the container is then waited for and
    deleted (not timed)."""
    pid_file = os.path.join(root, container_id + ".pid")
    base = [runtime, "--root", root]
    with open(os.devnull, "r+b") as null:
        start = time.monotonic()
        subprocess.run(base + ["create", "--bundle", bundle, "--pid-file", pid_file,
                               container_id], check=True, stdin=null, stdout=null, env=env,
                       timeout=oci.COMMAND_TIMEOUT)
        subprocess.run(base + ["start", container_id], check=True, env=env,
                       timeout=oci.COMMAND_TIMEOUT)
        elapsed = (time.monotonic() - start) * 1000
    deadline = time.monotonic() + oci.COMMAND_TIMEOUT
    while "stopped" not in subprocess.run(base + ["state", container_id], env=env,
                                          stdout=subprocess.PIPE, text=True).stdout:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    subprocess.run(base + ["delete", "--force", container_id], env=env, check=True)
    return elapsed


def ctr_run(containerd, runtime, container_id):
    start = time.monotonic()
    oci.run(containerd.run_args(runtime, container_id, "echo", "bench"), check=True)
    return (time.monotonic() - start) * 1000


def report(name, values, base_name, base_values):
    value, base = statistics.median(values), statistics.median(base_values)
    print(f"{name} {value:.2f} ms | {base_name} {base:.2f} ms | ratio {value / base:.2f}",
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    reason = oci.missing_prerequisite("containerd", "ctr", "runc")
    if reason:
        print(f"oci_bench: {reason}; skipped", file=sys.stderr)
        return 0
    work = tempfile.mkdtemp(prefix="ember-oci-bench-")
    containerd = None
    caller_cgroups = oci.CallerCgroups(oci.Containerd.NAMESPACE)
    try:
        config = oci.write_runtime_config(os.path.join(work, "runtime.json"), work)
        env = dict(os.environ, EMBER_RUNTIME_CONFIG=config)
        # The same runtime with its VMMs unjailed, to show what the jail costs.
        unjailed_config = os.path.join(work, "runtime-unjailed.json")
        with open(config) as f, open(unjailed_config, "w") as out:
            json.dump(dict(json.load(f), jailer={"enabled": False}), out)
        unjailed_env = dict(os.environ, EMBER_RUNTIME_CONFIG=unjailed_config)
        bundle = os.path.join(work, "bundle")
        make_bundle(bundle)
        roots = {name: os.path.join(work, name + "-root") for name in ("ember", "runc")}
        for root in roots.values():
            os.makedirs(root)
        # The first create builds the guest image: the figure is for a cached one.
        create_start(oci.RUNTIME, roots["ember"], bundle, "warm", env)
        ember_ms, unjailed_ms, runc_ms = [], [], []
        for run in range(args.runs):
            ember_ms.append(create_start(oci.RUNTIME, roots["ember"], bundle, f"e{run}", env))
            unjailed_ms.append(create_start(oci.RUNTIME, roots["ember"], bundle, f"u{run}",
                                            unjailed_env))
            runc_ms.append(create_start("runc", roots["runc"], bundle, f"r{run}", env))
            if args.verbose:
                print(f"run {run}: ember-runtime {ember_ms[-1]:.2f} ms, unjailed "
                      f"{unjailed_ms[-1]:.2f} ms, runc {runc_ms[-1]:.2f} ms", file=sys.stderr)
        report("oci_create_start_ms", ember_ms, "runc_create_start_ms", runc_ms)
        report("oci_create_start_unjailed_ms", unjailed_ms, "runc_create_start_ms", runc_ms)

        os.makedirs(os.path.join(work, "containerd"))
        containerd = oci.Containerd(os.path.join(work, "containerd"), config)
        containerd.ctr("image", "import", oci.write_busybox_archive(
            os.path.join(work, "busybox.tar")), check=True)
        ctr_run(containerd, oci.RUNTIME, "warm")  # the overlay root's image, built once
        ember_ms, runc_ms = [], []
        for run in range(args.runs):
            ember_ms.append(ctr_run(containerd, oci.RUNTIME, f"e{run}"))
            runc_ms.append(ctr_run(containerd, "runc", f"r{run}"))
            if args.verbose:
                print(f"run {run}: ctr+ember-runtime {ember_ms[-1]:.2f} ms, "
                      f"ctr+runc {runc_ms[-1]:.2f} ms", file=sys.stderr)
        report("ctr_run_to_exit_ms", ember_ms, "ctr_run_runc_to_exit_ms", runc_ms)
    finally:
        if containerd:
            containerd.stop()
        subprocess.run(["umount", "-R", "--lazy", work], stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
        caller_cgroups.remove_new()
    return 0


if __name__ == "__main__":
    oci.enter_private_namespaces()
    oci.lo_up()
    sys.exit(main())
