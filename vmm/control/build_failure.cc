#include "vmm/control/build_failure.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "absl/status/status.h"
#include "ember/v1/vmm_control.pb.h"
#include "vmm/base/unique_fd.h"
#include "vmm/control/frame.h"
#include "vmm/exit_code.h"

namespace ember::control {
namespace {

int g_control_listen_fd = -1;
std::string g_exit_record_path;

constexpr int kAcceptTimeoutMs = 1000;
constexpr int kWriteTimeoutMs = 1000;

void SendToController(const v1::BuildFailure& failure) {
  if (g_control_listen_fd < 0) return;
  // emberd connects before it starts ember-vmm, so its connection is already queued.
  pollfd pfd{g_control_listen_fd, POLLIN, 0};
  if (::poll(&pfd, 1, kAcceptTimeoutMs) != 1) return;
  base::UniqueFd conn(::accept4(g_control_listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn) return;
  v1::VmmMessage message;
  v1::ControlEvent* event = message.mutable_event();
  event->set_kind(v1::ControlEvent::BUILD_FAILED);
  event->set_exit_code(failure.exit_code());
  event->set_reason(failure.message());
  *event->mutable_build_failure() = failure;
  std::string frame;
  if (!AppendFrame(message, &frame).ok()) return;
  (void)WriteAll(conn.Get(), frame, kWriteTimeoutMs);
}

void WriteExitRecord(const v1::BuildFailure& failure) {
  if (g_exit_record_path.empty()) return;
  // Not O_TRUNC: the VMM's filter refuses it; the record is cut to the line below.
  base::UniqueFd fd(
      ::open(g_exit_record_path.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return;
  std::string line = std::to_string(failure.exit_code()) + " " + failure.message() + "\n";
  if (::pwrite(fd.Get(), line.data(), line.size(), 0) == static_cast<ssize_t>(line.size())) {
    (void)::ftruncate(fd.Get(), static_cast<off_t>(line.size()));
  }
}

}  // namespace

void SetBuildFailureSinks(int control_listen_fd, std::string exit_record_path) {
  g_control_listen_fd = control_listen_fd;
  g_exit_record_path = std::move(exit_record_path);
}

void ReportBuildFailure(int exit_code, std::string_view message) {
  v1::BuildFailure failure;
  failure.set_code(static_cast<int>(exit_code == vmm::kExitBadInput
                                        ? absl::StatusCode::kInvalidArgument
                                        : absl::StatusCode::kInternal));
  // One line: the exit record holds one.
  std::string text(message);
  for (char& c : text) {
    if (c == '\n') c = ' ';
  }
  failure.set_message(text);
  failure.set_exit_code(exit_code);
  SendToController(failure);
  WriteExitRecord(failure);
}

}  // namespace ember::control
