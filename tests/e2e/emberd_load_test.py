"""Load: 50 VMs created, started and stopped concurrently through emberd's API; afterwards
emberd's fd count and RSS must be back near their starting values (leak check)."""
import concurrent.futures
import sys
import time
import unittest

import ember_unittest
import ember_client as ec
from ember_client import api

VMS = 50


class LoadTest(unittest.TestCase):
    def test_fifty_vms_concurrently_then_no_leak(self):
        emberd = ec.Emberd()
        try:
            stub = emberd.stub
            pid = emberd.proc.pid
            # Warm up gRPC's threads and allocator with one full cycle before the baseline.
            self.cycle(stub, "warm")
            base_fds, base_rss = ec.proc_fds(pid), ec.proc_rss_kib(pid)

            start = time.time()
            with concurrent.futures.ThreadPoolExecutor(VMS) as pool:
                booted = list(pool.map(lambda i: self.create_start(stub, f"load-{i}"),
                                       range(VMS)))
            up = time.time() - start
            peak_fds, peak_rss = ec.proc_fds(pid), ec.proc_rss_kib(pid)
            self.assertEqual(len(stub.List(api.ListRequest()).vms), VMS + 1)
            with concurrent.futures.ThreadPoolExecutor(VMS) as pool:
                list(pool.map(lambda i: self.stop_delete(stub, f"load-{i}"), range(VMS)))
            time.sleep(0.5)
            end_fds, end_rss = ec.proc_fds(pid), ec.proc_rss_kib(pid)
            print(f"{VMS} VMs created+booted in {up:.2f} s ({VMS / up:.1f} VMs/s), boot "
                  f"median {sorted(booted)[VMS // 2]} us; emberd fds {base_fds} -> {peak_fds} "
                  f"-> {end_fds}, RSS {base_rss} -> {peak_rss} -> {end_rss} KiB "
                  f"({(peak_rss - base_rss) / VMS:.0f} KiB per live VM)", file=sys.stderr)
            self.assertLessEqual(end_fds, base_fds + 2)
            self.assertLess(end_rss, base_rss + 8 * 1024)
        finally:
            emberd.close()

    @staticmethod
    def create_start(stub, vm_id):
        stub.Create(api.CreateRequest(vm_id=vm_id, config=ec.config()), timeout=120)
        stub.Start(api.VmRequest(vm_id=vm_id), timeout=120)
        deadline = time.time() + 60
        while time.time() < deadline:
            vm = stub.Get(api.VmRequest(vm_id=vm_id), timeout=30)
            if vm.boot_time_us:
                return vm.boot_time_us
            time.sleep(0.02)
        raise AssertionError(f"{vm_id} did not boot")

    @staticmethod
    def stop_delete(stub, vm_id):
        stub.Stop(api.StopRequest(vm_id=vm_id), timeout=120)
        stub.Delete(api.DeleteRequest(vm_id=vm_id), timeout=120)

    def cycle(self, stub, vm_id):
        self.create_start(stub, vm_id)
        stub.Stop(api.StopRequest(vm_id=vm_id), timeout=60)


if __name__ == "__main__":
    ec.require_kvm()
    ember_unittest.main()
