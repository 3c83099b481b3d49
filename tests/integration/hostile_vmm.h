#pragma once

// What the hostile-guest tests (hostile_*_test.cc) share: ember-vmm run as emberd runs it,
// under a control socket, with its console and log in files; and the host-side figures
// those tests assert on (memory, the VMM thread's CPU time, file sizes, answer times).
#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ember/v1/vmm_control.pb.h"
#include "tests/support/process.h"
#include "vmm/base/unique_fd.h"
#include "vmm/control/frame.h"

namespace ember::testing {

// One ember-vmm driven over its control socket. The VM starts on construction (Start
// request); the destructor kills whatever is left.
class ControlledVmm {
 public:
  // Writes `config_json` (Firecracker's format) into `dir` and starts ember-vmm on it with
  // --control-fd, --serial-out dir/console.log and --log-path dir/vmm.log, plus `extra_args`;
  // under `wrapper` (a program and its arguments that runs the command line after it, such
  // as ember-syscall-recorder) when one is given. Check ok() before use.
  ControlledVmm(const std::string& dir, const std::string& config_json,
                const std::vector<std::string>& extra_args = {},
                const std::vector<std::string>& wrapper = {});
  ~ControlledVmm();
  ControlledVmm(const ControlledVmm&) = delete;
  ControlledVmm& operator=(const ControlledVmm&) = delete;

  // Empty when the VMM started and its VM runs; otherwise what went wrong.
  [[nodiscard]] const std::string& error() const { return error_; }
  [[nodiscard]] bool ok() const { return error_.empty(); }

  // Sends `request` and waits up to `timeout` for its response (events in between are
  // skipped). `*took` receives the time from the send to the response. A response with
  // code -1 and a message stands for no response at all.
  v1::ControlResponse Call(v1::ControlRequest request, std::chrono::milliseconds timeout,
                           std::chrono::milliseconds* took = nullptr);

  // Waits until the console file holds `text`; false after `timeout`.
  bool WaitForConsole(const std::string& text, std::chrono::milliseconds timeout) const;
  [[nodiscard]] std::string Console() const;

  // Waits for the process to end (the guest resets the machine after its scenarios).
  ProcessResult Wait(std::chrono::milliseconds timeout) { return process_->Wait(timeout); }

  [[nodiscard]] pid_t pid() const { return process_->pid(); }
  [[nodiscard]] const std::string& console_path() const { return console_path_; }
  [[nodiscard]] const std::string& log_path() const { return log_path_; }

 private:
  // Reads the next message within `timeout`; false when none came.
  bool Receive(v1::VmmMessage* message, std::chrono::milliseconds timeout);

  std::string console_path_;
  std::string log_path_;
  std::unique_ptr<Process> process_;
  base::UniqueFd conn_;
  control::FrameReader reader_;
  std::uint64_t next_id_ = 1;
  std::string error_;
};

// A VM whose guest ran its scenarios and now idles (the `idle` scenario's line is on its
// console): the VMM's own memory then (AnonRssKib), and the console.
struct IdleVm {
  std::uint64_t own_kib = 0;
  std::string console;
};

// Runs `config_json`, whose scenarios must end with `idle`, in `dir` under ControlledVmm,
// until the guest idles. Test failures (EXPECT) when it cannot start or never idles.
IdleVm RunUntilIdle(const std::string& dir, const std::string& config_json);

// Whether the VMM after a hostile guest holds at most `margin_kib` more of its own memory than
// the control run; the failure message gives both figures and the hostile guest's console.
::testing::AssertionResult OwnMemoryWithinMargin(const IdleVm& hostile, const IdleVm& control,
                                                 std::uint64_t margin_kib);

// A listening Unix stream socket at `path`, close-on-exec unless `inheritable`; empty on
// failure (errno says why).
base::UniqueFd ListenUnix(const std::string& path, int backlog, bool inheritable = false);

// The resident memory of process `pid` that is its own, in KiB: RssAnon (heap, stacks), not
// guest memory (a memfd: RssShmem), which a guest fills as it pleases up to its configured
// size. 0 when it cannot be read.
std::uint64_t AnonRssKib(pid_t pid);

// CPU time (user + system) thread `tid` of process `pid` has used so far.
std::chrono::milliseconds ThreadCpuTime(pid_t pid, pid_t tid);

// The size of the file at `path`; 0 when it does not exist.
std::uint64_t FileSize(const std::string& path);

// The number a scenario printed right after `prefix` on the console ("... refused 1234"); 0
// when there is none.
std::uint64_t GuestCount(const std::string& console, const std::string& prefix);

// The "drives" member of a Firecracker config: one drive, BLK_DRIVE_ID (blk_pattern.h), on
// the io_uring engine, backed by `image` written to dir/disk.img.
std::string DriveMember(const std::string& dir, const std::string& image);

// The "vsock" member of a Firecracker config: vsock0, VSOCK_GUEST_CID (vsock_ports.h), its
// Unix-socket backend at `uds`.
std::string VsockMember(const std::string& uds);

// What the `blk` scenario expects on its disk (blk_pattern.h), for DriveMember.
std::string BlkPatternImage();

// Runs iproute2's ip(8) (found by absolute path: Process does not search PATH) with `args`.
ProcessResult Ip(std::vector<std::string> args);

// A Firecracker config for the test guest running `scenarios` (ember.test=), with
// `devices` (JSON members such as "drives": [...]) added.
std::string GuestConfig(const std::string& scenarios, const std::string& devices = "");

}  // namespace ember::testing
