// One snapshot of a networked test guest restored into two clone networks at once (needs root
// and /dev/kvm): each clone's ember-vmm finds the snapshot's tap by its name in its own
// namespace, and each guest answers at the same address, as Firecracker's clones do.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>

#include "tests/clone_network/world.h"
#include "tests/support/files.h"
#include "tests/support/kvm_available.h"
#include "tests/support/process.h"
#include "vmm/emberd/clone_network/clone_network.h"
#include "vmm/emberd/launcher.h"
#include "vmm/emberd/vm_manager.h"

namespace ember::testing {
namespace {

using emberd::CloneNetwork;
using emberd::CloneNetworkSpec;
using emberd::Ipv4Cidr;
using std::chrono::seconds;

constexpr char kTap[] = "tap0";
constexpr char kGuestAddress[] = "172.16.0.2";
constexpr int kJailedUid = 830881;

CloneNetworkSpec Spec() {
  CloneNetworkSpec spec;
  spec.tap_name = kTap;
  spec.tap_address = *Ipv4Cidr::Parse("172.16.0.1/30");
  return spec;
}

// ember-vmm started while the calling thread is inside `network`: it runs there.
std::unique_ptr<Process> StartInside(const CloneNetwork& network,
                                     const std::vector<std::string>& argv) {
  absl::StatusOr<emberd::ScopedNetns> inside = network.Enter();
  EXPECT_TRUE(inside.ok()) << inside.status();
  return std::make_unique<Process>(argv);
}

// Sends `text` to the guest's UDP echo port from a socket of `network`'s namespace.
base::UniqueFd SendFromInside(const CloneNetwork& network, const std::string& text) {
  base::UniqueFd udp = SocketIn(network.netns_fd(), SOCK_DGRAM);
  sockaddr_in guest{};
  guest.sin_family = AF_INET;
  guest.sin_port = htons(7);
  inet_pton(AF_INET, kGuestAddress, &guest.sin_addr);
  // sockaddr_in is what sendto() takes through its generic pointer.
  EXPECT_EQ(::sendto(udp.Get(), text.data(), text.size(), 0, reinterpret_cast<sockaddr*>(&guest),
                     sizeof(guest)),
            static_cast<ssize_t>(text.size()))
      << std::strerror(errno);
  return udp;
}

// The guest's echo of `text`, sent from inside `network`; "" when none came in 30 s. Sent
// again every second: a restored VMM attaches to its tap some time after its process starts,
// and what reaches a tap before that (the kernel's ARP request too) is dropped.
std::string EchoFromInside(const CloneNetwork& network, const std::string& text) {
  for (int attempt = 0; attempt < 30; ++attempt) {
    base::UniqueFd udp = SendFromInside(network, text);
    pollfd p{udp.Get(), POLLIN, 0};
    if (::poll(&p, 1, 1000) != 1) continue;
    char buf[256];
    ssize_t n = ::recv(udp.Get(), buf, sizeof(buf), 0);
    if (n > 0) return std::string(buf, static_cast<std::size_t>(n));
  }
  return "";
}

bool WaitForLog(const std::string& path, const std::string& text) {
  for (int i = 0; i < 400 && ReadFile(path).find(text) == std::string::npos; ++i) usleep(50'000);
  return ReadFile(path).find(text) != std::string::npos;
}

// Boots the net scenario in a network of the clones' shape and snapshots it into `state` and
// `memory` (its VMM then killed, so only the snapshot remains).
void TakeSnapshot(const std::string& dir, const std::string& state, const std::string& memory) {
  absl::StatusOr<CloneNetwork> deployed = CloneNetwork::Prepare(Spec());
  ASSERT_TRUE(deployed.ok()) << deployed.status();
  const std::string config = WriteTempFile(
      "vm.json",
      std::string(R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=net ember.net=)") +
          kGuestAddress + R"(/30"}, "network-interfaces": [{"iface_id": "eth0",
          "host_dev_name": ")" +
          kTap + R"(", "guest_mac": "06:00:0a:00:00:02"}]})");
  const std::string log = dir + "/deployed.log";
  std::unique_ptr<Process> vmm =
      StartInside(*deployed, {BinPath("ember-vmm"), "--config", config, "--snapshot-path", state,
                              "--snapshot-mem-path", memory, "--log-path", log});
  ASSERT_TRUE(vmm->WaitForOutput("net: ready", seconds(60)));
  EXPECT_EQ(EchoFromInside(*deployed, "deployed"), "deployed");
  vmm->Signal(SIGUSR1);
  const bool written = WaitForLog(log, "snapshot written");
  vmm->Signal(SIGKILL);
  (void)vmm->Wait(seconds(10));
  ASSERT_TRUE(written) << ReadFile(log);
}

// Sends "quit" to each clone's guest and expects each VMM to end cleanly after the scenario.
void QuitAll(const std::vector<CloneNetwork>& clones, std::vector<std::unique_ptr<Process>>& vmms) {
  for (std::size_t i = 0; i < clones.size(); ++i) {
    (void)SendFromInside(clones[i], "quit");  // the guest ends instead of answering
    ProcessResult result = vmms[i]->Wait(seconds(60));
    EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
    EXPECT_NE(result.out.find("PASS net"), std::string::npos) << result.out << result.err;
  }
}

TEST(CloneNetworkRestore, TwoClonesOfOneSnapshotRunAtOnceEachAnsweringAtTheSameAddress) {
  if (std::string why = EnterTestHost(); !why.empty()) GTEST_SKIP() << why;
  EMBER_REQUIRE_KVM();
  ScopedTempDir dir("fnnet-restore");
  const HostState before = ReadHostState();
  const std::string state = dir.path() + "/vm.state";
  const std::string memory = dir.path() + "/vm.mem";
  TakeSnapshot(dir.path(), state, memory);
  if (HasFatalFailure()) return;

  std::vector<CloneNetwork> clones;
  std::vector<std::unique_ptr<Process>> vmms;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<CloneNetwork> clone = CloneNetwork::Prepare(Spec());
    ASSERT_TRUE(clone.ok()) << clone.status();
    clones.push_back(std::move(*clone));
    vmms.push_back(StartInside(
        clones.back(), {BinPath("ember-vmm"), "--restore-from", state, "--restore-mem", memory}));
  }
  // Both restored guests run at once, each reached through its own namespace's tap0.
  for (int i = 0; i < 2; ++i) {
    const std::string text = "clone " + std::to_string(i);
    EXPECT_EQ(EchoFromInside(clones[static_cast<std::size_t>(i)], text), text);
  }
  QuitAll(clones, vmms);
  for (CloneNetwork& clone : clones) EXPECT_TRUE(clone.Teardown().ok());
  clones.clear();
  const HostState after = ReadHostState();
  EXPECT_EQ(after, before) << "before:\n" << Describe(before) << "\nafter:\n" << Describe(after);
}

// The same through ember-jailer, as emberd runs clones: each jail joins its clone network by
// name (--isolate --netns) and takes over the tap made ahead for it (--tap), which becomes
// the jailed uid's; the VMM has no capabilities and still opens it.
TEST(CloneNetworkRestore, JailedClonesJoinTheirNetworksAndTakeTheirTaps) {
  if (std::string why = EnterTestHost(); !why.empty()) GTEST_SKIP() << why;
  EMBER_REQUIRE_KVM();
  ScopedTempDir dir("fnnet-jailed");
  const HostState before = ReadHostState();
  const std::string state = dir.path() + "/vm.state";
  const std::string memory = dir.path() + "/vm.mem";
  TakeSnapshot(dir.path(), state, memory);
  if (HasFatalFailure()) return;

  std::vector<CloneNetwork> clones;
  std::vector<std::unique_ptr<Process>> vmms;
  for (int i = 0; i < 2; ++i) {
    CloneNetworkSpec spec = Spec();
    spec.mount_path = dir.path() + "/netns/clone" + std::to_string(i);
    absl::StatusOr<CloneNetwork> clone = CloneNetwork::Prepare(std::move(spec));
    ASSERT_TRUE(clone.ok()) << clone.status();
    clones.push_back(std::move(*clone));
    const std::string id = "fnnet-clone" + std::to_string(i);
    const std::string uid = std::to_string(kJailedUid + i);
    const std::string root = dir.path() + "/ember-vmm/" + id + "/root";
    ASSERT_TRUE(std::filesystem::create_directories(root));
    for (const auto& [from, name] : {std::pair{state, "/vm.state"}, std::pair{memory, "/vm.mem"}}) {
      ASSERT_TRUE(std::filesystem::copy_file(from, root + name));
      std::filesystem::permissions(root + name, std::filesystem::perms::owner_read |
                                                    std::filesystem::perms::group_read |
                                                    std::filesystem::perms::others_read);
    }
    absl::StatusOr<std::vector<std::string>> netns = clones.back().JailerArgs();
    ASSERT_TRUE(netns.ok()) << netns.status();
    std::vector<std::string> argv = {BinPath("ember-jailer"),
                                     "--id",
                                     id,
                                     "--exec-file",
                                     BinPath("ember-vmm"),
                                     "--uid",
                                     uid,
                                     "--gid",
                                     uid,
                                     "--chroot-base-dir",
                                     dir.path(),
                                     "--isolate"};
    argv.insert(argv.end(), netns->begin(), netns->end());
    argv.insert(argv.end(),
                {"--tap", kTap, "--", "--restore-from", "/vm.state", "--restore-mem", "/vm.mem"});
    vmms.push_back(std::make_unique<Process>(argv));
  }
  for (std::size_t i = 0; i < 2; ++i) {
    const std::string text = "jailed clone " + std::to_string(i);
    EXPECT_EQ(EchoFromInside(clones[i], text), text);
    ProcessResult details = IpIn(clones[i].netns_fd(), std::string("-d link show ") + kTap);
    const std::string uid = std::to_string(kJailedUid + static_cast<int>(i));
    EXPECT_NE(details.out.find("user " + uid + " group " + uid), std::string::npos) << details.out;
  }
  QuitAll(clones, vmms);
  for (CloneNetwork& clone : clones) EXPECT_TRUE(clone.Teardown().ok());
  clones.clear();
  const HostState after = ReadHostState();
  EXPECT_EQ(after, before) << "before:\n" << Describe(before) << "\nafter:\n" << Describe(after);
}

// emberd's own restore (VmManager::Restore, what the Functions pool calls) with a clone
// network per clone: the fork server starts each clone's VMM inside its network.
TEST(CloneNetworkRestore, EmberdRestoresEachCloneIntoItsNetwork) {
  if (std::string why = EnterTestHost(); !why.empty()) GTEST_SKIP() << why;
  EMBER_REQUIRE_KVM();
  ScopedTempDir dir("fnnet-emberd");
  const std::string state = dir.path() + "/vm.state";
  const std::string memory = dir.path() + "/vm.mem";
  TakeSnapshot(dir.path(), state, memory);
  if (HasFatalFailure()) return;
  const std::string netns_dir = dir.path() + "/netns";
  std::vector<CloneNetwork> clones;
  std::vector<std::string> paths;
  for (int i = 0; i < 2; ++i) {
    CloneNetworkSpec spec = Spec();
    spec.mount_path = netns_dir + "/c" + std::to_string(i);
    absl::StatusOr<CloneNetwork> clone = CloneNetwork::Prepare(std::move(spec));
    ASSERT_TRUE(clone.ok()) << clone.status();
    paths.push_back(clone->spec().mount_path);
    clones.push_back(std::move(*clone));
  }
  // The fork server first, while this process has one thread.
  auto launcher = emberd::ForkServerLauncher::Start(BinPath("ember-vmm"), std::nullopt, netns_dir);
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  emberd::ManagerOptions options;
  options.state_dir = dir.path() + "/emberd";
  auto manager = emberd::VmManager::Create(options, std::move(*launcher));
  ASSERT_TRUE(manager.ok()) << manager.status();
  v1::RestoreRequest request;
  request.set_state_path(state);
  request.set_memory_path(memory);
  request.set_vm_id_prefix("clone");
  request.set_count(2);
  request.set_resume(true);
  absl::StatusOr<v1::RestoreResponse> restored = (*manager)->Restore(request, paths);
  ASSERT_TRUE(restored.ok()) << restored.status();
  ASSERT_EQ(restored->vms_size(), 2);
  for (std::size_t i = 0; i < 2; ++i) {
    const std::string text = "emberd clone " + std::to_string(i);
    EXPECT_EQ(EchoFromInside(clones[i], text), text);
  }
  for (const v1::Vm& vm : restored->vms()) EXPECT_TRUE((*manager)->Delete(vm.vm_id(), true).ok());
}

}  // namespace
}  // namespace ember::testing
