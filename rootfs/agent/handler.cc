#include "rootfs/agent/handler.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <iostream>
#include <thread>
#include <utility>

#include "rootfs/agent/exec_session.h"
#include "rootfs/agent/process_table.h"
#include "vmm/base/status.h"

namespace ember::agent {

using Clock = std::chrono::steady_clock;

struct Handler::Process {
  Child child;
  base::UniqueFd in;   // the handler's stdin, non-blocking
  base::UniqueFd out;  // its stdout, non-blocking
};

namespace {

constexpr std::size_t kLengthBytes = 4;

// Why an exchange with the handler stopped.
enum class Stop { kNone, kTimeout, kDied };

// Waits until `fd` is ready for `events`, the handler dies or `deadline` passes.
Stop WaitFor(int fd, short events, int pidfd, const std::optional<Clock::time_point>& deadline) {
  while (true) {
    int wait = -1;
    if (deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now())
                      .count();
      if (left <= 0) return Stop::kTimeout;
      wait = static_cast<int>(left);
    }
    pollfd fds[2] = {{fd, events, 0}, {pidfd, POLLIN, 0}};
    int ready = ::poll(fds, 2, wait);
    if (ready < 0 && errno != EINTR) return Stop::kDied;
    if (ready <= 0) continue;
    if (fds[0].revents != 0) return Stop::kNone;  // ready, or at its end: the call will say
    if (fds[1].revents != 0) return Stop::kDied;
  }
}

Stop WriteFully(int fd, int pidfd, std::string_view data,
                const std::optional<Clock::time_point>& deadline) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return Stop::kDied;  // EPIPE
    if (Stop stop = WaitFor(fd, POLLOUT, pidfd, deadline); stop != Stop::kNone) return stop;
  }
  return Stop::kNone;
}

// Reads exactly `size` bytes into `out`.
Stop ReadFully(int fd, int pidfd, char* out, std::size_t size,
               const std::optional<Clock::time_point>& deadline) {
  while (size > 0) {
    ssize_t n = ::read(fd, out, size);
    if (n > 0) {
      out += n;
      size -= static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) return Stop::kDied;  // its stdout closed
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return Stop::kDied;
    if (Stop stop = WaitFor(fd, POLLIN, pidfd, deadline); stop != Stop::kNone) {
      // Dead, but what it wrote before dying still counts.
      if (stop == Stop::kDied) {
        pollfd pfd{fd, POLLIN, 0};
        if (::poll(&pfd, 1, 0) > 0) continue;
      }
      return stop;
    }
  }
  return Stop::kNone;
}

std::string LengthPrefix(std::size_t size) {
  std::string prefix(kLengthBytes, '\0');
  for (std::size_t i = 0; i < kLengthBytes; ++i) {
    prefix[i] = static_cast<char>((size >> (8 * i)) & 0xff);
  }
  return prefix;
}

}  // namespace

absl::Status Handler::StartLocked(const SpawnSpec& base_spec) {
  int in[2];
  int out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return base::ErrnoError("pipe2", "handler stdin");
  base::UniqueFd in_read(in[0]);
  base::UniqueFd in_write(in[1]);
  if (::pipe2(out, O_CLOEXEC) != 0) return base::ErrnoError("pipe2", "handler stdout");
  base::UniqueFd out_read(out[0]);
  base::UniqueFd out_write(out[1]);
  SpawnSpec spec = base_spec;
  spec.stdin_fd = in_read.Get();
  spec.stdout_fd = out_write.Get();
  spec.stderr_fd = -1;
  spec.controlling_tty = false;
  EMBER_ASSIGN_OR_RETURN(Child child, Spawn(spec));
  auto process = std::make_shared<Process>();
  process->child = std::move(child);
  process->in = std::move(in_write);
  process->out = std::move(out_read);
  for (int fd : {process->in.Get(), process->out.Get()}) {
    (void)::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  current_ = process;
  spec_ = base_spec;
  // The reaper: drops the process from current_ (so no signal reaches a reused pid), then
  // reaps it, so a handler that dies between invocations leaves no zombie.
  std::thread([this, process] {
    pollfd pfd{process->child.pidfd.Get(), POLLIN, 0};
    while (::poll(&pfd, 1, -1) < 0 && errno == EINTR) {
    }
    {
      std::lock_guard lock(mutex_);
      if (current_ == process) current_.reset();
    }
    ExitInfo exit = WaitExited(process->child);
    std::cerr << "ember-agent: the handler (pid " << process->child.pid
              << ") ended with status " << exit.exit_code << "\n";
  }).detach();
  return absl::OkStatus();
}

absl::Status Handler::Start(SpawnSpec spec) {
  std::lock_guard lock(mutex_);
  if (current_) {
    return absl::AlreadyExistsError("a handler runs already (pid " +
                                    std::to_string(current_->child.pid) + ")");
  }
  return StartLocked(spec);
}

bool Handler::Running() {
  std::lock_guard lock(mutex_);
  return current_ != nullptr;
}

absl::Status Handler::Signal(int sig, bool all) {
  std::lock_guard lock(mutex_);
  if (!current_) return absl::NotFoundError("no handler runs");
  return SignalProcess(current_->child.pidfd.Get(), current_->child.pid, sig, all);
}

void Handler::Kill(const std::shared_ptr<Process>& process) {
  (void)SignalProcess(process->child.pidfd.Get(), process->child.pid, SIGKILL, true);
  pollfd pfd{process->child.pidfd.Get(), POLLIN, 0};
  while (::poll(&pfd, 1, -1) < 0 && errno == EINTR) {
  }
  std::lock_guard lock(mutex_);
  if (current_ == process) current_.reset();
}

absl::Status Handler::Invoke(const std::string& payload, std::uint32_t timeout_ms,
                             const DefaultSpec& default_spec, const SendPiece& send) {
  std::shared_ptr<Process> process;
  {
    std::lock_guard lock(mutex_);
    if (busy_) return absl::FailedPreconditionError("the handler is serving another invocation");
    if (!current_) {
      SpawnSpec spec;
      if (spec_) {
        spec = *spec_;
      } else {
        EMBER_ASSIGN_OR_RETURN(spec, default_spec());
      }
      EMBER_RETURN_IF_ERROR(StartLocked(spec));
    }
    busy_ = true;
    process = current_;
  }
  // The handler is free again once its result is read, before the last piece goes out: a
  // host may send its next Invoke the moment that piece arrives.
  struct Idle {
    Handler* handler;
    bool done = false;
    void Release() {
      if (done) return;
      done = true;
      std::lock_guard lock(handler->mutex_);
      handler->busy_ = false;
    }
    ~Idle() { Release(); }
  } idle{this};

  // Bytes the handler wrote outside an invocation would be read as the next result's length.
  std::array<char, 4096> stale;
  std::size_t dropped = 0;
  for (ssize_t n; (n = ::read(process->out.Get(), stale.data(), stale.size())) > 0;) {
    dropped += static_cast<std::size_t>(n);
  }
  if (dropped > 0) {
    std::cerr << "ember-agent: dropped " << dropped
              << " bytes the handler wrote outside an invocation\n";
  }

  const auto start = Clock::now();
  std::optional<Clock::time_point> deadline;
  if (timeout_ms > 0) deadline = start + std::chrono::milliseconds(timeout_ms);
  const int pidfd = process->child.pidfd.Get();
  Stop stop = WriteFully(process->in.Get(), pidfd, LengthPrefix(payload.size()) + payload,
                         deadline);
  char header[kLengthBytes];
  if (stop == Stop::kNone) stop = ReadFully(process->out.Get(), pidfd, header, kLengthBytes, deadline);
  std::size_t size = 0;
  for (std::size_t i = 0; i < kLengthBytes; ++i) {
    size |= std::size_t{static_cast<unsigned char>(header[i])} << (8 * i);
  }
  bool host_open = true;
  std::string chunk;
  std::size_t left = size;
  bool first = true;
  while (stop == Stop::kNone && (left > 0 || first)) {
    first = false;
    chunk.resize(std::min(left, kMaxOutputChunk));
    stop = ReadFully(process->out.Get(), pidfd, chunk.data(), chunk.size(), deadline);
    if (stop != Stop::kNone) break;
    left -= chunk.size();
    v1::InvokeResult piece;
    piece.set_output(chunk);
    if (left == 0) {
      idle.Release();
      piece.set_last(true);
      piece.set_handler_us(static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count()));
    }
    // A host that left still gets its result read, so the next one starts in step.
    if (host_open && !send(piece).ok()) host_open = false;
  }
  if (stop == Stop::kTimeout) {
    Kill(process);
    std::lock_guard lock(mutex_);
    absl::Status restarted = current_ ? absl::OkStatus() : StartLocked(*spec_);
    std::string message = "the handler did not answer within " + std::to_string(timeout_ms) +
                          " ms; it was killed and ";
    message += restarted.ok() ? "started again"
                              : "could not be started again: " + std::string(restarted.message());
    return absl::DeadlineExceededError(message);
  }
  if (stop == Stop::kDied) {
    // Killed for good measure: a handler that closed its stdout but lives is of no use.
    Kill(process);
    return absl::UnavailableError(
        "the handler died during the invocation; the next Invoke starts it again");
  }
  return absl::OkStatus();
}

}  // namespace ember::agent
