"""Functions benchmarks (issue 16), driven by perf/run: emberd on a scratch state directory,
its VMMs jailed as by default (--no-jail: unjailed, where cold clones also restore through
userfaultfd with working-set prefetch), the test guest's `agent` scenario playing the
function, Debian's python3-grpcio as the client. Prints perf/run's result lines, each figure beside a baseline measured in the same
run:
  fn_invoke_cold_ms           Invoke with no pool (restore + resume + ready + PostRestore +
                              Invoke + result), client side, beside api_create_start_to_boot_ms
                              (Create + Start of a fresh VM to its BOOTED event, same emberd)
  fn_invoke_warm_ms           Invoke served by a clone kept warm, beside
                              agent_exec_roundtrip_ms (an Exec of `echo` straight to a booted
                              guest's agent over its vsock socket, no emberd)
  fn_invoke_cold_host_ms      the host's part of a cold Invoke: the client's time less the
                              clone's resume to PostRestore answered and the handler (mostly
                              emulated guest code here), beside the host's part of a boot
                              (api_create_start_to_boot_host_ms: the client's Create to BOOTED
                              less the guest's own first instruction to boot-timer write,
                              ember-vmm's metrics): what the <= 0.5x goal can be judged on where
                              guest code is emulated
  fn_invocations_per_s        16 concurrent clients on warm clones, beside the same with one
                              client (fn_invocations_per_s_1client), and beside the same 16
                              clients on an emberd of the other kind (jailed and unjailed, one
                              after the other in the same run)
  fn_pool_memory_per_clone_kib
                              RSS (smaps_rollup) of an idle pooled clone's ember-vmm (restored,
                              paused, never resumed), beside a booted idle VM's
                              (vm_idle_rss_kib)
Nothing is asserted."""
import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "e2e"))
sys.path.insert(0, here)
import ember_client as ec  # noqa: E402
from ember_client import api, api_grpc  # noqa: E402
from api_bench import create_start_boot  # noqa: E402
import agent_wire  # noqa: E402

MEM_MIB = 32


def rss_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                return int(line.split()[1])
    return 0


def timed_ms(call):
    t0 = time.monotonic()
    result = call()
    return (time.monotonic() - t0) * 1000, result


class AgentSocket(agent_wire.Connection):
    """A connection to the guest agent through ember-vmm's vsock Unix-socket backend."""

    def __init__(self, uds_path):
        super().__init__(uds_path)
        self.send_raw(b"CONNECT 1024\n")
        line = b""
        while not line.endswith(b"\n"):
            line += self.sock.recv(1)
        if not line.startswith(b"OK "):
            raise RuntimeError(f"vsock CONNECT answered {line!r}")


def agent_exec_ms(uds_path):
    request = agent_wire.pb.AgentRequest()
    request.exec.argv.extend(["echo", "hello"])
    t0 = time.monotonic()
    conn = AgentSocket(uds_path)
    conn.send(request)
    responses = conn.until_final()
    conn.close()
    ms = (time.monotonic() - t0) * 1000
    if responses[-1].WhichOneof("kind") != "exit":
        raise RuntimeError(f"exec echo: {responses[-1]}")
    return ms


def vmm_pid(pid):
    """The ember-vmm of a VM whose recorded pid is `pid`: itself, or under its ember-jailer."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        program = f.read().split(b"\0")[0]
    if not program.endswith(b"ember-jailer"):
        return pid
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return vmm_pid(int(f.read().split()[0]))


def booted_agent_vm(emberd, vm_id):
    """A VM of the `agent` scenario with its vsock socket in the emberd's scratch directory (an
    unjailed emberd's: the API lets a jailed VM have no vsock socket); returns (its pid, the
    socket path) once its agent answers."""
    uds = os.path.join(emberd.dir, vm_id + ".sock")
    config = ec.config("agent", mem=MEM_MIB)
    config.vsock.vsock_id = "vsock0"
    config.vsock.guest_cid = 3
    config.vsock.uds_path = uds
    emberd.stub.Create(api.CreateRequest(vm_id=vm_id, config=config), timeout=60)
    vm = emberd.stub.Start(api.VmRequest(vm_id=vm_id), timeout=60)
    deadline = time.monotonic() + 120
    while True:
        try:
            request = agent_wire.pb.AgentRequest()
            request.ready.SetInParent()
            conn = AgentSocket(uds)
            conn.send(request)
            conn.until_final()
            conn.close()
            return vm.pid, uds
        except (OSError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def guest_boot_ms(stub, vm_id):
    """The guest's own part of a booted VM's boot: its first instruction to its boot-timer
    write (ember-vmm's metrics, both counted from the Start request)."""
    metrics = json.loads(stub.GetMetrics(api.GetMetricsRequest(vm_id=vm_id), timeout=30).json)
    return (metrics["boot"]["boot_time_us"] -
            metrics["vmm"]["start_to_first_instruction_us"]) / 1000


def make_warm_clones(invoke):
    """16 clones of function "warm" kept warm: 16 invocations at once, each busy long enough
    that none is served by another's clone."""
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: invoke("warm", b"spin:300:%d" % i), range(16)))


def rate(invoke, clients, per_client):
    """Invocations/s of function "warm" with `clients` concurrent clients, `per_client` each."""
    barrier = threading.Barrier(clients)

    def client(i):
        barrier.wait()
        for j in range(per_client):
            invoke("warm", b"client %d call %d" % (i, j))

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return clients * per_client / (time.monotonic() - t0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=20)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--no-jail", action="store_true")
    args, _ = parser.parse_known_args()
    jailed = not args.no_jail
    mode = "jailed" if jailed else "unjailed"
    emberd = ec.Emberd(extra_args=[] if jailed else ["--no-jail"])
    try:
        fn = api_grpc.FunctionsStub(emberd.channel)
        image = os.path.join(emberd.dir, "root.ext4")
        with open(image, "wb") as f:
            f.truncate(1 << 20)

        def deploy(name, **pool):
            fn.DeployFunction(api.DeployFunctionRequest(
                name=name, root_image_path=image, mem_size_mib=MEM_MIB,
                warmup_payloads=[b"warm up"], pool=api.FunctionPool(**pool)), timeout=300)

        def invoke(name, payload=b"benchmark payload"):
            result = fn.Invoke(api.FunctionInvokeRequest(name=name, payload=payload), timeout=120)
            if result.output != payload[::-1]:
                raise RuntimeError(f"wrong result {result.output!r}")
            return result

        # Cold: no pool, every invocation restores its clone; interleaved with fresh boots.
        deploy("cold")
        cold, boot, parts, cold_host, boot_host = [], [], [], [], []
        for i in range(args.runs):
            ms, result = timed_ms(lambda: invoke("cold"))
            if result.timings.pool_hit:
                raise RuntimeError("a cold invocation hit the pool")
            cold.append(ms)
            parts.append(result.timings)
            cold_host.append(ms - (result.timings.resume_to_ready_us +
                                   result.timings.handler_us) / 1000)
            boot_ms, _ = create_start_boot(emberd.stub, f"boot-{i}")
            boot.append(boot_ms)
            boot_host.append(boot_ms - guest_boot_ms(emberd.stub, f"boot-{i}"))
            emberd.stub.Stop(api.StopRequest(vm_id=f"boot-{i}"), timeout=60)
            emberd.stub.Delete(api.DeleteRequest(vm_id=f"boot-{i}"), timeout=60)
            if args.verbose:
                print(f"# cold {ms:.2f} ms {result.timings} | boot {boot_ms:.2f} ms",
                      file=sys.stderr)
        cold_ms, boot_ms = statistics.median(cold), statistics.median(boot)
        print(f"fn_invoke_cold_ms {cold_ms:.2f} ms | api_create_start_to_boot_ms_{mode} "
              f"{boot_ms:.2f} ms | ratio {cold_ms / boot_ms:.2f}")
        med = {k: statistics.median(getattr(t, k) for t in parts) / 1000
               for k in ("restore_us", "resume_to_ready_us", "handler_us")}
        print(f"# fn_invoke_cold parts (medians): restore {med['restore_us']:.2f} ms, resume to "
              f"ready + PostRestore {med['resume_to_ready_us']:.2f} ms, handler "
              f"{med['handler_us']:.2f} ms", file=sys.stderr)
        cold_host_ms, boot_host_ms = statistics.median(cold_host), statistics.median(boot_host)
        print(f"fn_invoke_cold_host_ms_{mode} {cold_host_ms:.2f} ms | "
              f"api_create_start_to_boot_host_ms_{mode} {boot_host_ms:.2f} ms | "
              f"ratio {cold_host_ms / boot_host_ms:.2f}")

        # Warm: a clone kept warm serves each call; beside a bare agent Exec round trip.
        deploy("warm", keep_warm_ms=600000, max_concurrency=16)
        invoke("warm")
        if jailed:
            # The warm clone's own agent, straight over its VMM's socket in its jail (reached
            # through an O_PATH fd, as emberd does); idle memory from a booted idle VM.
            clone = invoke("warm").vm_id
            host = os.path.join(emberd.state_dir, "jail", "ember-vmm", clone, "root", "out",
                                "agent.sock")
            uds = f"/proc/self/fd/{os.open(host, os.O_PATH | os.O_NOFOLLOW)}"
            emberd.stub.Create(api.CreateRequest(
                vm_id="idle-baseline", config=ec.config("idle", mem=MEM_MIB)), timeout=60)
            pid = vmm_pid(emberd.stub.Start(api.VmRequest(vm_id="idle-baseline"),
                                            timeout=60).pid)
            time.sleep(1)  # booted
        else:
            pid, uds = booted_agent_vm(emberd, "agent-baseline")
        warm, exec_ms = [], []
        for _ in range(args.runs):
            ms, result = timed_ms(lambda: invoke("warm"))
            if not result.timings.pool_hit:
                raise RuntimeError("a warm invocation missed the pool")
            warm.append(ms)
            exec_ms.append(agent_exec_ms(uds))
        warm_ms, agent_ms = statistics.median(warm), statistics.median(exec_ms)
        print(f"fn_invoke_warm_ms {warm_ms:.2f} ms | agent_exec_roundtrip_ms {agent_ms:.2f} ms"
              f" | ratio {warm_ms / agent_ms:.2f}")
        idle_rss = rss_kib(pid)

        # Throughput: 16 clients, each on a warm clone (made first), then one client alone.
        make_warm_clones(invoke)
        many, one = rate(invoke, 16, args.per_client), rate(invoke, 1, args.per_client)
        print(f"fn_invocations_per_s_{mode} {many:.1f} /s | fn_invocations_per_s_1client_{mode} "
              f"{one:.1f} /s | ratio {many / one:.2f}")

        # Memory of idle pooled clones (paused, never resumed) beside the booted idle VM's.
        deploy("pooled", min_warm=4)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            f = fn.ListFunctions(api.ListFunctionsRequest(name="pooled"), timeout=30).functions[0]
            if f.paused_clones == 4:
                break
            time.sleep(0.05)
        pids = [vm.pid for vm in emberd.stub.List(api.ListRequest(), timeout=30).vms
                if vm.vm_id.startswith("fn-pooled-") and vm.state == api.Vm.PAUSED]
        clone_rss = statistics.median(rss_kib(vmm_pid(p)) for p in pids)
        print(f"fn_pool_memory_per_clone_kib {clone_rss:.0f} KiB | vm_idle_rss_kib {idle_rss} KiB"
              f" | ratio {clone_rss / idle_rss:.2f}")
        for name in ("cold", "warm", "pooled"):
            fn.DeleteFunction(api.DeleteFunctionRequest(name=name, force=True), timeout=300)
    finally:
        emberd.close()

    # The same 16 clients on an emberd of the other kind, started after the first has ended.
    other = "unjailed" if jailed else "jailed"
    emberd = ec.Emberd(extra_args=["--no-jail"] if jailed else [])
    try:
        fn = api_grpc.FunctionsStub(emberd.channel)
        image = os.path.join(emberd.dir, "root.ext4")
        with open(image, "wb") as f:
            f.truncate(1 << 20)
        fn.DeployFunction(api.DeployFunctionRequest(
            name="warm", root_image_path=image, mem_size_mib=MEM_MIB, warmup_payloads=[b"warm up"],
            pool=api.FunctionPool(keep_warm_ms=600000, max_concurrency=16)), timeout=300)

        def invoke_other(name, payload):
            result = fn.Invoke(api.FunctionInvokeRequest(name=name, payload=payload), timeout=120)
            if result.output != payload[::-1]:
                raise RuntimeError(f"wrong result {result.output!r}")
            return result

        make_warm_clones(invoke_other)
        other_rate = rate(invoke_other, 16, args.per_client)
        print(f"fn_invocations_per_s_{mode} {many:.1f} /s | fn_invocations_per_s_{other} "
              f"{other_rate:.1f} /s | ratio {many / other_rate:.2f}")
        fn.DeleteFunction(api.DeleteFunctionRequest(name="warm", force=True), timeout=300)
    finally:
        emberd.close()


if __name__ == "__main__":
    main()
