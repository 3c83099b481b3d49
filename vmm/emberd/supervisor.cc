#include "vmm/emberd/supervisor.h"

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "vmm/base/logging.h"
#include "vmm/base/status.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace ember::emberd {

namespace {

constexpr int kWriteTimeoutMs = 2000;

void PidfdKill(int pidfd, int sig) { ::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0); }

std::string Quoted(const std::string& vm_id) { return "VM \"" + vm_id + "\""; }

}  // namespace

void SupervisedVmm::Kill() {
  if (pidfd_) PidfdKill(pidfd_.Get(), SIGKILL);
}

absl::Status ResponseStatus(const std::string& vm_id, const v1::ControlResponse& response) {
  if (response.code() == 0) return absl::OkStatus();
  std::string message = Quoted(vm_id) + ": " + response.message();
  if (response.code() < 0 || response.code() > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    return absl::InternalError(message + " (ember-vmm answered with unknown status code " +
                               std::to_string(response.code()) + ")");
  }
  return absl::Status(static_cast<absl::StatusCode>(response.code()), message);
}

absl::Status BuildFailureStatus(const std::string& vm_id, bool restore,
                                const v1::BuildFailure& failure) {
  const auto code = static_cast<absl::StatusCode>(failure.code());
  if (code == absl::StatusCode::kInvalidArgument) {
    return absl::InvalidArgumentError((restore ? "snapshot: " : "config: ") + failure.message());
  }
  v1::ControlResponse response;
  response.set_code(failure.code() == 0 ? static_cast<int>(absl::StatusCode::kInternal)
                                        : failure.code());
  response.set_message(failure.message());
  return ResponseStatus(vm_id, response);
}

v1::ExitInfo RecordedExit(const absl::StatusOr<std::string>& record) {
  v1::ExitInfo exit;
  exit.set_exit_code(-1);
  exit.set_reason("ember-vmm ended while emberd was not running (exit status unknown)");
  if (!record.ok()) return exit;
  // The first line only, and short: the VMM's words.
  std::string line = record->substr(0, std::min(record->find('\n'), std::size_t{1024}));
  int code = -1;
  auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), code);
  if (ec != std::errc() || end == line.data() + line.size() || *end != ' ' || code < 0) return exit;
  exit.set_exit_code(code);
  exit.set_reason(line.substr(static_cast<std::size_t>(end + 1 - line.data())) +
                  " (while emberd was not running)");
  return exit;
}

absl::StatusOr<std::unique_ptr<Supervisor>> Supervisor::Create(
    std::chrono::milliseconds request_timeout) {
  std::unique_ptr<Supervisor> supervisor(new Supervisor(request_timeout));
  supervisor->epoll_.Reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!supervisor->epoll_) return base::ErrnoError("epoll_create1");
  supervisor->wakeup_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!supervisor->wakeup_) return base::ErrnoError("eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = supervisor->wakeup_.Get();
  if (::epoll_ctl(supervisor->epoll_.Get(), EPOLL_CTL_ADD, supervisor->wakeup_.Get(), &ev) !=
      0) {
    return base::ErrnoError("epoll_ctl(ADD)", "wakeup eventfd");
  }
  Supervisor* self = supervisor.get();
  supervisor->thread_ = std::thread([self] { self->Loop(); });
  return supervisor;
}

Supervisor::~Supervisor() {
  {
    std::lock_guard lock(watch_mu_);
    stopping_ = true;
  }
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wakeup_.Get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<base::UniqueFd> OpenPidfd(pid_t pid) {
  base::UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) return base::ErrnoError("pidfd_open", "pid " + std::to_string(pid));
  return pidfd;
}

absl::Status Supervisor::Attach(const std::shared_ptr<SupervisedVmm>& vmm,
                                base::UniqueFd control, pid_t pid, bool child) {
  base::UniqueFd pidfd;
  if (pid > 0) {
    EMBER_ASSIGN_OR_RETURN(pidfd, OpenPidfd(pid));
  }
  std::lock_guard lock(vmm->mu);
  vmm->child_ = child;
  vmm->control_ = std::move(control);
  WatchFd(vmm->control_.Get(), vmm, false);
  if (pidfd) {
    vmm->pidfd_ = std::move(pidfd);
    WatchFd(vmm->pidfd_.Get(), vmm, true);
  }
  return absl::OkStatus();
}

absl::Status Supervisor::WatchProcess(const std::shared_ptr<SupervisedVmm>& vmm, pid_t pid) {
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd pidfd, OpenPidfd(pid));
  WatchProcess(vmm, std::move(pidfd));
  return absl::OkStatus();
}

void Supervisor::WatchProcess(const std::shared_ptr<SupervisedVmm>& vmm, base::UniqueFd pidfd) {
  std::lock_guard lock(vmm->mu);
  vmm->pidfd_ = std::move(pidfd);
  WatchFd(vmm->pidfd_.Get(), vmm, true);
}

void Supervisor::Detach(SupervisedVmm& vmm) {
  if (!vmm.control_) return;
  UnwatchFd(vmm.control_.Get());
  vmm.control_.Reset();
  vmm.reader_ = control::FrameReader();
  vmm.cv.notify_all();
}

void Supervisor::WatchFd(int fd, const std::shared_ptr<SupervisedVmm>& vmm, bool is_pidfd) {
  std::lock_guard lock(watch_mu_);
  watches_[fd] = Watch{vmm, is_pidfd};
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.Get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    EMBER_LOG(kError) << "emberd: epoll_ctl(ADD): " << std::strerror(errno);
  }
}

void Supervisor::UnwatchFd(int fd) {
  std::lock_guard lock(watch_mu_);
  ::epoll_ctl(epoll_.Get(), EPOLL_CTL_DEL, fd, nullptr);
  watches_.erase(fd);
}

void Supervisor::Loop() {
  std::array<epoll_event, 64> events{};
  while (true) {
    int n = ::epoll_wait(epoll_.Get(), events.data(), static_cast<int>(events.size()), -1);
    if (n < 0 && errno != EINTR) {
      EMBER_LOG(kError) << "emberd: epoll_wait: " << std::strerror(errno);
      return;
    }
    for (int i = 0; i < n; ++i) {
      int fd = events[static_cast<std::size_t>(i)].data.fd;
      std::optional<Watch> watch;
      {
        std::lock_guard lock(watch_mu_);
        if (fd == wakeup_.Get()) {
          if (stopping_) return;
          continue;
        }
        auto it = watches_.find(fd);
        if (it != watches_.end()) watch = it->second;
      }
      if (!watch) continue;
      if (watch->is_pidfd) {
        // The fd number may have been reused since epoll_wait returned: check it is ready.
        pollfd pfd{fd, POLLIN, 0};
        if (::poll(&pfd, 1, 0) == 1) OnProcessExit(*watch->vmm);
      } else {
        OnControlReadable(*watch->vmm);
      }
    }
  }
}

bool Supervisor::DrainFrames(SupervisedVmm& vmm) {
  std::string payload;
  while (true) {
    absl::StatusOr<bool> got = vmm.reader_.Next(&payload);
    if (!got.ok()) {
      EMBER_LOG(kWarn) << "emberd: VM " << vmm.vm_id() << ": " << got.status().message();
      return false;
    }
    if (!*got) return true;
    v1::VmmMessage message;
    if (!message.ParseFromString(payload)) {
      EMBER_LOG(kWarn) << "emberd: VM " << vmm.vm_id() << ": unparsable control message";
      continue;
    }
    HandleMessage(vmm, message);
  }
}

void Supervisor::OnControlReadable(SupervisedVmm& vmm) {
  std::lock_guard lock(vmm.mu);
  if (!vmm.control_) return;
  absl::StatusOr<bool> open = vmm.reader_.ReadFrom(vmm.control_.Get());
  const bool intact = DrainFrames(vmm);
  // ember-vmm closed the channel (it is exiting, or another controller took over).
  if (!intact || !open.ok() || !*open) Detach(vmm);
}

void Supervisor::HandleMessage(SupervisedVmm& vmm, const v1::VmmMessage& message) {
  if (message.has_response()) {
    auto it = vmm.responses_.find(message.response().id());
    if (it != vmm.responses_.end()) {
      it->second = message.response();
      vmm.cv.notify_all();
    }
    return;
  }
  const v1::ControlEvent& event = message.event();
  switch (event.kind()) {
    case v1::ControlEvent::HELLO:
      vmm.hello_ = true;
      vmm.OnHello(event.status());
      vmm.cv.notify_all();
      break;
    case v1::ControlEvent::STATE:
      vmm.OnState(event.status().state());
      break;
    case v1::ControlEvent::BOOTED:
      vmm.OnBooted(event.boot_time_us());
      break;
    case v1::ControlEvent::EXITED:
      vmm.vmm_exit_ = {event.exit_code(), event.reason()};
      break;
    case v1::ControlEvent::BUILD_FAILED:
      vmm.build_failure_ = event.build_failure();
      break;
    default:
      break;
  }
}

v1::ExitInfo Supervisor::ExitOf(SupervisedVmm& vmm) {
  v1::ExitInfo exit;
  exit.set_exit_code(-1);
  if (vmm.child_) {
    siginfo_t info{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(vmm.pidfd_.Get()), &info,
                 WEXITED | WNOHANG) == 0 &&
        info.si_pid != 0) {
      if (info.si_code == CLD_EXITED) {
        exit.set_exit_code(info.si_status);
      } else {
        exit.set_signal(info.si_status);
      }
    }
  }
  if (exit.signal() != 0) {
    exit.set_reason(std::string("ember-vmm was killed by signal ") +
                    std::to_string(exit.signal()) + " (" + strsignal(exit.signal()) + ")");
  } else if (vmm.vmm_exit_) {
    if (exit.exit_code() == -1) exit.set_exit_code(vmm.vmm_exit_->first);
    exit.set_reason(vmm.vmm_exit_->second);
  } else if (vmm.build_failure_) {
    if (exit.exit_code() == -1) exit.set_exit_code(vmm.build_failure_->exit_code());
    exit.set_reason("ember-vmm could not build the VM: " + vmm.build_failure_->message());
  } else if (exit.exit_code() >= 0) {
    exit.set_reason("ember-vmm exited with code " + std::to_string(exit.exit_code()) +
                    " without saying why (its vmm.log may)");
  } else {
    exit.set_reason("ember-vmm ended (exit status unknown: it was started by an earlier emberd)");
  }
  return exit;
}

void Supervisor::OnProcessExit(SupervisedVmm& vmm) {
  std::lock_guard lock(vmm.mu);
  if (!vmm.pidfd_) return;
  // Read what ember-vmm said last (its EXITED or BUILD_FAILED event) before closing.
  if (vmm.control_) {
    (void)vmm.reader_.ReadFrom(vmm.control_.Get());
    (void)DrainFrames(vmm);
    Detach(vmm);
  }
  v1::ExitInfo exit = ExitOf(vmm);
  UnwatchFd(vmm.pidfd_.Get());
  vmm.pidfd_.Reset();
  vmm.exited_ = true;
  EMBER_LOG(kInfo) << "emberd: VM " << vmm.vm_id() << " ended: " << exit.reason();
  vmm.OnExit(exit);
  vmm.cv.notify_all();
}

absl::StatusOr<v1::ControlResponse> Supervisor::Call(SupervisedVmm& vmm,
                                                     v1::ControlRequest request, Wait wait,
                                                     int fd) {
  return CallFor(vmm, std::move(request),
                 wait == Wait::kWhileConnected
                     ? std::nullopt
                     : std::optional<std::chrono::milliseconds>(request_timeout_),
                 fd);
}

absl::StatusOr<v1::ControlResponse> Supervisor::CallWithin(SupervisedVmm& vmm,
                                                           v1::ControlRequest request,
                                                           std::chrono::milliseconds timeout) {
  return CallFor(vmm, std::move(request), std::min(timeout, request_timeout_), -1);
}

absl::StatusOr<v1::ControlResponse> Supervisor::CallFor(
    SupervisedVmm& vmm, v1::ControlRequest request,
    std::optional<std::chrono::milliseconds> timeout, int fd) {
  std::unique_lock lock(vmm.mu);
  if (!vmm.control_) {
    return absl::UnavailableError(Quoted(vmm.vm_id()) + ": its ember-vmm is not connected");
  }
  std::uint64_t id = vmm.next_id_++;
  request.set_id(id);
  EMBER_RETURN_IF_ERROR(control::SendFrame(vmm.control_.Get(), request, fd, kWriteTimeoutMs));
  vmm.responses_[id];
  auto answered_or_gone = [&] { return vmm.responses_[id].has_value() || !vmm.control_; };
  bool answered = true;
  if (!timeout) {
    // The VMM's exit closes the connection, so this ends when the VMM does.
    vmm.cv.wait(lock, answered_or_gone);
  } else {
    answered = vmm.cv.wait_for(lock, *timeout, answered_or_gone);
  }
  std::optional<v1::ControlResponse> response = std::move(vmm.responses_[id]);
  vmm.responses_.erase(id);
  if (!response) {
    return absl::UnavailableError(Quoted(vmm.vm_id()) + ": ember-vmm " +
                                  (answered ? "went away" : "did not answer in time"));
  }
  EMBER_RETURN_IF_ERROR(ResponseStatus(vmm.vm_id(), *response));
  return *response;
}

bool Supervisor::WaitForExit(SupervisedVmm& vmm, std::unique_lock<std::mutex>& lock,
                             std::chrono::milliseconds timeout) {
  return vmm.cv.wait_for(lock, timeout, [&] { return vmm.exited_; });
}

}  // namespace ember::emberd
