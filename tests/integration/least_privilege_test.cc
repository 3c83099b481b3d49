// Least privilege, measured: ember-vmm runs the hostile and device scenarios (every attack on
// blk, net and vsock, a vsock peer without credit, blk reads, writes and a reset in flight on
// both engines, the sync one flushing and rate-limited; control requests, a pause, a snapshot,
// a uffd restore of it) under ember-syscall-recorder, which records the system calls each
// thread makes once it runs under its seccomp filter.
// For each thread kind (vmm_seccomp.h) every call made must be on its allowlist, and every
// allowed call not made must carry its reason in the policy (jailer/vmm_seccomp.cc). The test
// prints the counts: allowed, used, unused with their reasons.
//
// Filters are in log mode (--seccomp log), so that a call missing from a list is reported
// here with all the others instead of killing the VMM at the first. Needs root (a tap in a
// private network namespace) and /dev/kvm.
#include <gtest/gtest.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "jailer/vmm_seccomp.h"
#include "rootfs/testguest/blk_pattern.h"
#include "rootfs/testguest/hostile.h"
#include "rootfs/testguest/vsock_ports.h"
#include "tests/integration/hostile_vmm.h"
#include "tests/support/files.h"
#include "tests/support/kvm_available.h"
#include "tests/support/netns.h"
#include "tests/support/process.h"

namespace ember::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kTap[] = "emberlptap0";
constexpr jailer::VmmThreadKind kKinds[] = {
    jailer::VmmThreadKind::kVmm, jailer::VmmThreadKind::kVcpu, jailer::VmmThreadKind::kPageServer};

// What one recording says: per filter (by its length in instructions), the calls made.
using Recording = std::map<unsigned, std::set<long>>;

Recording ReadRecording(const std::string& path) {
  Recording recording;
  std::ifstream in(path);
  std::string first;
  while (in >> first) {
    if (first == "threads") {
      unsigned filter = 0, count = 0;
      in >> filter >> count;
      recording[filter];  // a filter whose threads made no call still counts as seen
      continue;
    }
    long nr = 0;
    std::uint64_t times = 0;
    in >> nr >> times;
    recording[static_cast<unsigned>(std::stoul(first))].insert(nr);
  }
  return recording;
}

// The filter lengths ember-vmm's log names ("seccomp filter \"vcpu\" (123 instructions)
// installed", at Debug level): length -> kind name.
std::map<unsigned, std::string> FilterNames(const std::string& log) {
  std::map<unsigned, std::string> names;
  const std::string key = "seccomp filter \"";
  for (std::size_t at = log.find(key); at != std::string::npos; at = log.find(key, at + 1)) {
    const std::size_t name_end = log.find('"', at + key.size());
    const std::size_t paren = log.find('(', name_end);
    if (name_end == std::string::npos || paren == std::string::npos) break;
    names[static_cast<unsigned>(std::stoul(log.substr(paren + 1)))] =
        log.substr(at + key.size(), name_end - at - key.size());
  }
  return names;
}

std::string SyscallName(long nr) {
  char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, static_cast<int>(nr));
  if (name == nullptr) return "syscall_" + std::to_string(nr);
  std::string out(name);
  std::free(name);
  return out;
}

// Adds `recording`'s calls to `used`, by kind name, with the names the VMM's log gives.
void AddCalls(const Recording& recording, const std::string& log,
              std::map<std::string, std::set<std::string>>* used) {
  const std::map<unsigned, std::string> names = FilterNames(log);
  for (const auto& [filter, calls] : recording) {
    auto name = names.find(filter);
    ASSERT_NE(name, names.end()) << "a thread ran under a filter of " << filter
                                 << " instructions that the log does not name:\n"
                                 << log;
    for (long nr : calls) (*used)[name->second].insert(SyscallName(nr));
  }
}

class LeastPrivilege : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string not_root = EnterPrivateNetns();
    if (!not_root.empty()) GTEST_SKIP() << not_root;
    EMBER_REQUIRE_KVM();
    ASSERT_EQ(Ip({"tuntap", "add", "dev", kTap, "mode", "tap"}).exit_code, 0);
    ASSERT_EQ(Ip({"link", "set", kTap, "up"}).exit_code, 0);
  }
  void TearDown() override { (void)Ip({"link", "del", kTap}); }

  std::vector<std::string> Recorder(const std::string& out) const {
    return {BinPath("ember-syscall-recorder"), out};
  }

  // The booted VM: every device's scenarios, a vsock peer without credit, and the controller's
  // requests, a pause and a snapshot (to dir/vm.state, dir/vm.mem) while status-order waits.
  void RunBootedVm(const std::string& dir) {
    const std::string uds = dir + "/v.sock";
    base::UniqueFd listener = ListenUnix(uds + "_" + std::to_string(VSOCK_HOST_PORT), 4);
    ASSERT_TRUE(listener);
    const std::string devices =
        DriveMember(dir, BlkPatternImage()) + ", " + VsockMember(uds) +
        R"(, "network-interfaces": [{"iface_id": "eth0", "host_dev_name": ")" + kTap + R"("}])";
    ControlledVmm vmm(dir,
                      GuestConfig("blk-reset,blk,blk-attacks,vsock-attacks,net-attacks,"
                                  "vsock-no-credit,status-order",
                                  devices),
                      {"--seccomp", "log", "--log-level", "Debug"}, Recorder(dir + "/boot.rec"));
    ASSERT_TRUE(vmm.ok()) << vmm.error();
    ASSERT_TRUE(vmm.WaitForConsole(NO_CREDIT_MARKER, seconds(240))) << vmm.Console();
    base::UniqueFd peer(::accept4(listener.Get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    ASSERT_TRUE(peer);
    const std::string data(64 * 1024, 'd');
    ASSERT_GT(::write(peer.Get(), data.data(), data.size()), 0);
    ASSERT_TRUE(vmm.WaitForConsole(STATUS_ORDER_MARKER, seconds(60))) << vmm.Console();

    v1::ControlRequest describe, metrics, pause, snapshot, resume;
    describe.mutable_describe();
    metrics.mutable_get_metrics();
    pause.mutable_pause();
    snapshot.mutable_create_snapshot()->set_state_path(dir + "/vm.state");
    snapshot.mutable_create_snapshot()->set_memory_path(dir + "/vm.mem");
    resume.mutable_resume();
    for (const v1::ControlRequest& request : {describe, metrics, pause, snapshot, resume}) {
      const v1::ControlResponse response = vmm.Call(request, seconds(60));
      ASSERT_EQ(response.code(), 0) << response.message() << "\n" << ReadFile(vmm.log_path());
    }
    const ProcessResult ended = vmm.Wait(seconds(120));
    ASSERT_EQ(ended.exit_code, 0) << ended.err << ReadFile(vmm.log_path());
    EXPECT_NE(vmm.Console().find("PASS status-order"), std::string::npos) << vmm.Console();
  }

  // The blk scenarios on the sync engine, with a flush (writeback cache) and an ops rate limit
  // tight enough to throttle them however slow the traced VMM is: blk-reset queues four reads
  // at once, two more than the bucket holds (the refill timer).
  void RunSyncEngineVm(const std::string& dir) {
    const std::string disk = dir + "/sync.img";
    std::ofstream(disk, std::ios::binary) << BlkPatternImage();
    const std::string drive = R"("drives": [{"drive_id": ")" BLK_DRIVE_ID
                              R"(", "path_on_host": ")" +
                              disk + R"(", "is_root_device": false, "is_read_only": false,
        "io_engine": "Sync", "cache_type": "Writeback",
        "rate_limiter": {"ops": {"size": 2, "refill_time": 200}}}])";
    const std::string config = dir + "/sync.json";
    std::ofstream(config) << GuestConfig("blk-reset,blk", drive);
    const ProcessResult ran = RunProcess(
        {BinPath("ember-syscall-recorder"), dir + "/sync.rec", BinPath("ember-vmm"), "--config",
         config, "--seccomp", "log", "--log-level", "Debug", "--log-path", dir + "/sync.log"},
        seconds(120));
    ASSERT_EQ(ran.exit_code, 0) << ran.err << ReadFile(dir + "/sync.log");
    EXPECT_NE(ran.out.find("PASS blk\n"), std::string::npos) << ran.out;
  }

  // The snapshot restored with its memory served over userfaultfd: the page-server thread.
  void RunUffdRestore(const std::string& dir) {
    const ProcessResult restored =
        RunProcess({BinPath("ember-syscall-recorder"), dir + "/restore.rec", BinPath("ember-vmm"),
                    "--restore-from", dir + "/vm.state", "--restore-mem", dir + "/vm.mem",
                    "--restore-mem-backend", "uffd", "--allow-dir", dir, "--seccomp", "log",
                    "--log-level", "Debug", "--log-path", dir + "/restore.log"},
                   seconds(120));
    ASSERT_EQ(restored.exit_code, 0) << restored.err << ReadFile(dir + "/restore.log");
    EXPECT_NE(restored.out.find("PASS status-order"), std::string::npos) << restored.out;
  }
};

TEST_F(LeastPrivilege, EveryCallAThreadKindMakesIsAllowedAndEveryAllowedOneUsedOrExplained) {
  ScopedTempDir dir("ember-least-privilege");
  RunBootedVm(dir.path());
  if (HasFatalFailure()) return;
  RunUffdRestore(dir.path());
  if (HasFatalFailure()) return;
  RunSyncEngineVm(dir.path());
  if (HasFatalFailure()) return;

  std::map<std::string, std::set<std::string>> used;
  AddCalls(ReadRecording(dir.path() + "/boot.rec"), ReadFile(dir.path() + "/vmm.log"), &used);
  AddCalls(ReadRecording(dir.path() + "/restore.rec"), ReadFile(dir.path() + "/restore.log"),
           &used);
  AddCalls(ReadRecording(dir.path() + "/sync.rec"), ReadFile(dir.path() + "/sync.log"), &used);

  jailer::VmmSeccompParams params;
  params.kick_signal = SIGRTMIN;
  std::ostringstream report;
  for (jailer::VmmThreadKind kind : kKinds) {
    const std::string name = jailer::VmmThreadKindName(kind);
    EXPECT_TRUE(used.contains(name)) << "no thread ran under the " << name << " filter";
    const std::set<std::string>& calls = used[name];
    std::map<std::string, std::string> allowed;  // name -> reason (rules may share a name)
    for (const jailer::SyscallRule& rule : jailer::VmmThreadPolicy(kind, params).rules) {
      allowed[rule.name] += (allowed[rule.name].empty() ? "" : "; ") + rule.reason;
    }
    std::vector<std::string> unused;
    for (const auto& [call, reason] : allowed) {
      if (!calls.contains(call)) unused.push_back(call);
      EXPECT_FALSE(reason.empty()) << name << ": " << call << " is allowed without a reason";
    }
    for (const std::string& call : calls) {
      EXPECT_TRUE(allowed.contains(call))
          << name << " threads called " << call << ", which their allowlist lacks";
    }
    report << name << ": allowed " << allowed.size() << ", used " << calls.size() << ", unused "
           << unused.size() << "\n";
    for (const std::string& call : unused)
      report << "  unused " << call << ": " << allowed[call] << "\n";
  }
  std::cout << report.str();
  RecordProperty("report", report.str());
}

}  // namespace
}  // namespace ember::testing
