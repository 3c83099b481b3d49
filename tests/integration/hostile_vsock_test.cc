// Hostile vsock drivers against ember-vmm's vsock device on real KVM, through its Unix-socket
// backend: a header-only RX buffer at the head of the ring while the host sends data
// (`vsock-tiny-rx`) must not keep the VMM thread busy once the guest idles, and REQUEST after
// REQUEST with no RX buffers (`vsock-req-churn`) must not grow the VMM's memory.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#include "rootfs/testguest/hostile.h"
#include "rootfs/testguest/vsock_ports.h"
#include "tests/integration/hostile_attacks.h"
#include "tests/integration/hostile_vmm.h"
#include "tests/support/files.h"
#include "tests/support/kvm_available.h"

namespace ember::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// The VMM thread's CPU time over kIdleWindow while the guest idles: a loop that only wakes for
// work uses next to nothing; one turning on a readable socket uses the whole window.
constexpr milliseconds kIdleWindow(2000);
constexpr milliseconds kIdleCpuLimit(100);
// How much more of its own memory than a quiet guest's VMM the churned one may hold: the
// bounded queues (RSTs waiting for RX buffers) and allocator slack. Keeping 8 bytes for each
// of the tens of thousands of connections the churn opens and resets goes beyond it.
constexpr std::uint64_t kRssMarginKib = 128;

bool Readable(int fd, milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

TEST(HostileVsock, HeaderOnlyRxBufferDoesNotKeepTheVmmThreadBusy) {
  EMBER_REQUIRE_KVM();
  ScopedTempDir dir("ember-hostile-vsock");
  const std::string uds = dir.path() + "/v.sock";
  base::UniqueFd listener = ListenUnix(uds + "_" + std::to_string(VSOCK_HOST_PORT), 4);
  ASSERT_TRUE(listener) << uds;
  ControlledVmm vmm(dir.path(), GuestConfig("vsock-tiny-rx,idle", VsockMember(uds)));
  ASSERT_TRUE(vmm.ok()) << vmm.error();
  ASSERT_TRUE(Readable(listener.Get(), seconds(60))) << "the guest never connected\n"
                                                     << vmm.Console();
  base::UniqueFd from_guest(::accept4(listener.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(vmm.WaitForConsole(VSOCK_TINY_RX_MARKER, seconds(60))) << vmm.Console();
  const std::string data = VSOCK_TINY_RX_DATA;
  ASSERT_EQ(::write(from_guest.Get(), data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ASSERT_TRUE(vmm.WaitForConsole("\nidle\n", seconds(60))) << vmm.Console();

  const milliseconds before = ThreadCpuTime(vmm.pid(), vmm.pid());  // the VMM thread
  std::this_thread::sleep_for(kIdleWindow);
  const milliseconds used = ThreadCpuTime(vmm.pid(), vmm.pid()) - before;

  EXPECT_LT(used.count(), kIdleCpuLimit.count())
      << "the VMM thread used " << used.count() << " ms of CPU in " << kIdleWindow.count()
      << " ms of guest idling";
  EXPECT_NE(vmm.Console().find("\nPASS vsock-tiny-rx\n"), std::string::npos) << vmm.Console();
}

// More than the host socket's buffers and the guest's few RX buffers can hold: a VMM that
// reads on without the guest's credit takes it all.
constexpr std::size_t kNoCreditWriteBytes = 4 * 1024 * 1024;

// Writes to non-blocking `fd` until it takes no more or `limit` bytes went; the bytes written.
std::size_t WriteUntilFull(int fd, std::size_t limit) {
  const std::string chunk(64 * 1024, 'c');
  std::size_t written = 0;
  while (written < limit) {
    const ssize_t n = ::write(fd, chunk.data(), std::min(chunk.size(), limit - written));
    if (n <= 0) break;
    written += static_cast<std::size_t>(n);
  }
  return written;
}

TEST(HostileVsock, PeerThatGrantsNoCreditGetsNoDataAndHoldsTheHostWriterBack) {
  EMBER_REQUIRE_KVM();
  ScopedTempDir dir("ember-hostile-vsock");
  const std::string uds = dir.path() + "/v.sock";
  base::UniqueFd listener = ListenUnix(uds + "_" + std::to_string(VSOCK_HOST_PORT), 4);
  ASSERT_TRUE(listener) << uds;
  ControlledVmm vmm(dir.path(), GuestConfig("vsock-no-credit,idle", VsockMember(uds)));
  ASSERT_TRUE(vmm.ok()) << vmm.error();
  ASSERT_TRUE(Readable(listener.Get(), seconds(60))) << "the guest never connected\n"
                                                     << vmm.Console();
  base::UniqueFd from_guest(::accept4(listener.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(vmm.WaitForConsole(NO_CREDIT_MARKER, seconds(60))) << vmm.Console();
  ASSERT_EQ(::fcntl(from_guest.Get(), F_SETFL, O_NONBLOCK), 0);

  const std::size_t written = WriteUntilFull(from_guest.Get(), kNoCreditWriteBytes);
  std::this_thread::sleep_for(milliseconds(500));  // the guest still withholds its credit
  const bool still_holding = vmm.Console().find(NO_CREDIT_GRANT_MARKER) == std::string::npos;
  const std::string held_metrics = FetchMetrics(vmm);
  ASSERT_TRUE(vmm.WaitForConsole("\nidle\n", seconds(60))) << vmm.Console();

  EXPECT_NE(vmm.Console().find("\nPASS vsock-no-credit\n"), std::string::npos) << vmm.Console();
  EXPECT_LT(written, kNoCreditWriteBytes) << "the VMM took every byte the host wrote";
  ASSERT_TRUE(still_holding) << "the guest granted credit before the host had written\n"
                             << vmm.Console();
  EXPECT_EQ(MetricValue(held_metrics, "vsock_vsock0", "rx_bytes"), 0) << held_metrics;
  EXPECT_LE(MetricValue(FetchMetrics(vmm), "vsock_vsock0", "rx_bytes"),
            static_cast<std::int64_t>(NO_CREDIT_GRANT_BYTES));
}

// Accepts and closes every connection to a listener until destroyed, as a host service
// whose clients come and go would.
class Acceptor {
 public:
  explicit Acceptor(int listener) : thread_([this, listener] { Run(listener); }) {}
  ~Acceptor() {
    stop_ = true;
    thread_.join();
  }
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

 private:
  void Run(int listener) {
    while (!stop_) {
      if (!Readable(listener, milliseconds(100))) continue;
      const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) ::close(fd);
    }
  }
  std::atomic<bool> stop_ = false;
  std::thread thread_;
};

// A VMM whose guest ran `scenario` against an accepting VSOCK_CHURN_PORT, once it idles.
IdleVm RunAgainstAcceptingPort(const std::string& scenario) {
  ScopedTempDir dir("ember-hostile-vsock");
  const std::string uds = dir.path() + "/v.sock";
  base::UniqueFd listener = ListenUnix(uds + "_" + std::to_string(VSOCK_CHURN_PORT), SOMAXCONN);
  EXPECT_TRUE(listener) << uds;
  Acceptor acceptor(listener.Get());
  return RunUntilIdle(dir.path(), GuestConfig(scenario + ",idle", VsockMember(uds)));
}

TEST(HostileVsock, RequestChurnWithoutRxBuffersLeavesTheVmmWithinItsMemoryMargin) {
  EMBER_REQUIRE_KVM();
  const IdleVm control = RunAgainstAcceptingPort("hello");
  const IdleVm churn = RunAgainstAcceptingPort("vsock-req-churn");

  ASSERT_NE(control.console.find("\nPASS hello\n"), std::string::npos) << control.console;
  EXPECT_NE(churn.console.find("\nPASS vsock-req-churn\n"), std::string::npos) << churn.console;
  EXPECT_TRUE(OwnMemoryWithinMargin(churn, control, kRssMarginKib));
}

}  // namespace
}  // namespace ember::testing
