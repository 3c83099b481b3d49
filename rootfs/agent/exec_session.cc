#include "rootfs/agent/exec_session.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <iostream>
#include <optional>
#include <thread>
#include <utility>

#include "rootfs/agent/exec_files.h"
#include "rootfs/agent/spawn.h"
#include "vmm/base/status.h"

namespace ember::agent {
namespace {

using Clock = std::chrono::steady_clock;

// Stop reading the host's stdin frames while this much is still to be written to the process.
constexpr std::size_t kMaxPendingStdin = 1 << 20;
// The terminal's end-of-file character in canonical mode (VEOF, ^D by default).
constexpr char kTerminalEof = '\x04';

// What closes a terminal's input after `last_written`: VEOF ends input at the start of a
// line, but only sends a partial line on, so a second one follows a line without its newline.
std::string TerminalEnd(std::string_view last_written) {
  if (last_written.empty() || last_written.back() == '\n') return std::string(1, kTerminalEof);
  return std::string(2, kTerminalEof);
}

void SetNonBlocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) (void)::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

struct Pipe {
  base::UniqueFd read;
  base::UniqueFd write;
};

absl::StatusOr<Pipe> MakePipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return base::ErrnoError("pipe2", "exec stdio");
  return Pipe{base::UniqueFd(fds[0]), base::UniqueFd(fds[1])};
}

struct Terminal {
  base::UniqueFd master;
  base::UniqueFd slave;
};

absl::StatusOr<Terminal> OpenTerminal(std::uint32_t rows, std::uint32_t cols) {
  Terminal t;
  t.master.Reset(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!t.master.Valid()) return base::ErrnoError("posix_openpt", "/dev/ptmx");
  if (::grantpt(t.master.Get()) != 0) return base::ErrnoError("grantpt", "pty");
  if (::unlockpt(t.master.Get()) != 0) return base::ErrnoError("unlockpt", "pty");
  char name[64];
  if (::ptsname_r(t.master.Get(), name, sizeof(name)) != 0) {
    return base::ErrnoError("ptsname_r", "pty");
  }
  t.slave.Reset(::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!t.slave.Valid()) return base::ErrnoError("open", name);
  if (rows != 0 || cols != 0) EMBER_RETURN_IF_ERROR(SetWindowSize(t.master.Get(), rows, cols));
  return t;
}

// One output source: a pipe's read end, or the terminal's master.
struct Source {
  int fd = -1;  // borrowed from the session's owners; -1 once at its end
  v1::Output::Stream stream = v1::Output::STDOUT;
};

// A running Exec and the state of its connection; lives on the connection's thread.
class Session {
 public:
  Session(Connection& conn, const v1::ExecRequest& request, ProcessTable& processes)
      : conn_(conn), request_(request), processes_(processes) {}

  void Run();

 private:
  absl::Status Start();
  void Loop();
  // Reads one chunk from `source` and sends it. False once the source has ended.
  bool ReadOutput(Source& source);
  absl::Status HandleHostRequest(const v1::AgentRequest& request);
  // Handles every whole request the connection has buffered.
  absl::Status HandleBufferedRequests();
  void WriteStdin();
  void KillGroup() { (void)SignalProcess(child_.pidfd.Get(), child_.pid, SIGKILL, true); }
  // Kills, reaps and forgets the process when the host is gone or broke the protocol.
  void Abandon();
  void ReapAndReport();

  Connection& conn_;
  const v1::ExecRequest& request_;
  ProcessTable& processes_;
  std::string id_;
  Child child_;
  Clock::time_point started_;
  base::UniqueFd stdin_write_;  // without a terminal
  base::UniqueFd stdout_read_;
  base::UniqueFd stderr_read_;
  base::UniqueFd master_;       // with a terminal
  Source sources_[2];
  int input_fd_ = -1;           // where stdin bytes go: stdin_write_ or master_
  std::string pending_stdin_;
  bool stdin_done_ = false;     // no more stdin will come
  bool timed_out_ = false;
  bool host_gone_ = false;
};

absl::Status Session::Start() {
  if (request_.argv().empty()) return absl::InvalidArgumentError("exec: argv is empty");
  if (request_.detach() && (request_.tty() || request_.stdin_stream() || !request_.stdin().empty())) {
    return absl::InvalidArgumentError(
        "exec: a detached process takes no stdin and no terminal (its output goes to the "
        "guest console)");
  }
  SpawnSpec spec;
  spec.argv.assign(request_.argv().begin(), request_.argv().end());
  spec.env.assign(request_.env().begin(), request_.env().end());
  spec.cwd = request_.cwd();
  spec.uid = request_.uid();
  spec.gid = request_.gid();
  EMBER_ASSIGN_OR_RETURN(spec.limits, LimitsOf(request_));
  EMBER_RETURN_IF_ERROR(WriteExecFiles(request_));
  base::UniqueFd child_stdin;
  base::UniqueFd child_stdout;
  base::UniqueFd child_stderr;
  bool has_stdin = request_.stdin_stream() || !request_.stdin().empty();
  if (request_.tty()) {
    EMBER_ASSIGN_OR_RETURN(Terminal terminal, OpenTerminal(request_.rows(), request_.cols()));
    master_ = std::move(terminal.master);
    spec.stdin_fd = spec.stdout_fd = spec.stderr_fd = terminal.slave.Get();
    spec.controlling_tty = true;
    child_stdin = std::move(terminal.slave);
    input_fd_ = master_.Get();
    sources_[0] = {master_.Get(), v1::Output::STDOUT};
  } else if (!request_.detach()) {
    if (has_stdin) {
      EMBER_ASSIGN_OR_RETURN(Pipe in, MakePipe());
      stdin_write_ = std::move(in.write);
      child_stdin = std::move(in.read);
      spec.stdin_fd = child_stdin.Get();
      input_fd_ = stdin_write_.Get();
    }
    EMBER_ASSIGN_OR_RETURN(Pipe out, MakePipe());
    EMBER_ASSIGN_OR_RETURN(Pipe err, MakePipe());
    stdout_read_ = std::move(out.read);
    stderr_read_ = std::move(err.read);
    child_stdout = std::move(out.write);
    child_stderr = std::move(err.write);
    spec.stdout_fd = child_stdout.Get();
    spec.stderr_fd = child_stderr.Get();
    sources_[0] = {stdout_read_.Get(), v1::Output::STDOUT};
    sources_[1] = {stderr_read_.Get(), v1::Output::STDERR};
  }
  EMBER_ASSIGN_OR_RETURN(id_, processes_.Reserve(request_.exec_id()));
  started_ = Clock::now();
  absl::StatusOr<Child> child = Spawn(spec);
  if (!child.ok()) {
    processes_.Remove(id_);
    return child.status();
  }
  child_ = std::move(*child);
  processes_.Attach(id_, child_.pid, child_.pidfd.Get(), master_.Get());
  for (int fd : {input_fd_, sources_[0].fd, sources_[1].fd}) {
    if (fd >= 0) SetNonBlocking(fd);
  }
  pending_stdin_ = request_.stdin();
  stdin_done_ = !request_.stdin_stream();
  if (stdin_done_ && request_.tty()) pending_stdin_ += TerminalEnd(pending_stdin_);
  return absl::OkStatus();
}

void Session::Run() {
  if (absl::Status started = Start(); !started.ok()) {
    conn_.SendError(started);
    return;
  }
  v1::AgentResponse response;
  response.mutable_exec_started()->set_exec_id(id_);
  response.mutable_exec_started()->set_pid(child_.pid);
  absl::Status sent = conn_.Send(response);
  if (request_.detach()) {
    // Reaped in the background: the entry goes first, so a signal cannot reach a reused pid.
    std::thread([processes = &processes_, id = id_, child = std::move(child_)] {
      pollfd pfd{child.pidfd.Get(), POLLIN, 0};
      while (::poll(&pfd, 1, -1) < 0 && errno == EINTR) {
      }
      processes->Remove(id);
      ExitInfo exit = WaitExited(child);
      std::cerr << "ember-agent: detached " << id << " ended with status " << exit.exit_code
                << "\n";
    }).detach();
    return;
  }
  if (!sent.ok()) {
    Abandon();
    return;
  }
  Loop();
}

void Session::Loop() {
  std::optional<Clock::time_point> deadline;
  if (request_.timeout_ms() > 0) {
    deadline = started_ + std::chrono::milliseconds(request_.timeout_ms());
  }
  // Frames that came with the request are buffered already; the socket will not say so.
  if (absl::Status handled = HandleBufferedRequests(); !handled.ok()) {
    conn_.SendError(handled);
    Abandon();
    return;
  }
  while (true) {
    // Slots: 0 the host, 1-2 the outputs, 3 the process's stdin, 4 the pidfd.
    pollfd fds[5] = {};
    bool want_host = pending_stdin_.size() < kMaxPendingStdin;
    fds[0] = {want_host ? conn_.fd() : -1, POLLIN, 0};
    fds[1] = {sources_[0].fd, POLLIN, 0};
    fds[2] = {sources_[1].fd, POLLIN, 0};
    bool want_input = input_fd_ >= 0 && !pending_stdin_.empty();
    // A terminal's master is polled for output in slot 1 already; its POLLOUT goes here.
    fds[3] = {want_input ? input_fd_ : -1, POLLOUT, 0};
    fds[4] = {child_.pidfd.Get(), POLLIN, 0};
    int wait = -1;
    if (deadline && !timed_out_) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now())
                      .count();
      wait = static_cast<int>(std::max<long long>(left, 0));
    }
    int ready = ::poll(fds, 5, wait);
    if (ready < 0 && errno != EINTR) {
      conn_.SendError(base::ErrnoError("poll", "exec " + id_));
      Abandon();
      return;
    }
    if (deadline && !timed_out_ && Clock::now() >= *deadline) {
      timed_out_ = true;
      KillGroup();
    }
    if (ready <= 0) continue;
    if (fds[0].revents != 0) {
      absl::StatusOr<bool> open = conn_.Pump();
      if (open.ok()) {
        if (absl::Status handled = HandleBufferedRequests(); !handled.ok()) open = handled;
      }
      if (!open.ok()) {
        conn_.SendError(open.status());
        Abandon();
        return;
      }
      if (!*open) {
        // The protocol keeps the host's side open until the final response.
        host_gone_ = true;
        Abandon();
        return;
      }
    }
    for (int slot = 1; slot <= 2; ++slot) {
      if (fds[slot].revents != 0) {
        ReadOutput(sources_[slot - 1]);
        if (host_gone_) {
          Abandon();
          return;
        }
      }
    }
    if (fds[3].revents != 0) WriteStdin();
    if (fds[4].revents != 0) {
      ReapAndReport();
      return;
    }
  }
}

bool Session::ReadOutput(Source& source) {
  if (source.fd < 0) return false;
  std::string chunk(kMaxOutputChunk, '\0');
  ssize_t n;
  do {
    n = ::read(source.fd, chunk.data(), chunk.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
  if (n <= 0) {
    // EOF, or EIO from a terminal whose every slave has closed.
    source.fd = -1;
    return false;
  }
  chunk.resize(static_cast<std::size_t>(n));
  v1::AgentResponse response;
  response.mutable_output()->set_stream(source.stream);
  response.mutable_output()->set_data(std::move(chunk));
  if (!conn_.Send(response).ok()) host_gone_ = true;
  return true;
}

absl::Status Session::HandleHostRequest(const v1::AgentRequest& request) {
  switch (request.kind_case()) {
    case v1::AgentRequest::kStdinData:
      if (!request_.stdin_stream() || stdin_done_) {
        return absl::FailedPreconditionError(
            "stdin_data without an open stdin stream (the exec did not ask for stdin_stream, "
            "or eof was sent)");
      }
      pending_stdin_ += request.stdin_data().data();
      if (request.stdin_data().eof()) stdin_done_ = true;
      if (stdin_done_ && request_.tty()) pending_stdin_ += TerminalEnd(request.stdin_data().data());
      WriteStdin();
      return absl::OkStatus();
    case v1::AgentRequest::kSignal:
      // The exit will tell; a signal the process already escaped is no error here.
      return SignalProcess(child_.pidfd.Get(), child_.pid, request.signal().signal(),
                           request.signal().all());
    case v1::AgentRequest::kResize:
      if (!master_.Valid()) return absl::FailedPreconditionError("resize: the exec has no tty");
      return SetWindowSize(master_.Get(), request.resize().rows(), request.resize().cols());
    default:
      return absl::InvalidArgumentError(
          "only stdin_data, signal and resize may follow an exec on its connection");
  }
}

absl::Status Session::HandleBufferedRequests() {
  while (true) {
    EMBER_ASSIGN_OR_RETURN(std::optional<v1::AgentRequest> next, conn_.NextBuffered());
    if (!next) return absl::OkStatus();
    EMBER_RETURN_IF_ERROR(HandleHostRequest(*next));
  }
}

void Session::WriteStdin() {
  while (!pending_stdin_.empty() && input_fd_ >= 0) {
    ssize_t n = ::write(input_fd_, pending_stdin_.data(), pending_stdin_.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n < 0) {
      // The process closed its stdin (EPIPE): what it did not read is dropped, as a pipe
      // would.
      pending_stdin_.clear();
      if (!request_.tty()) stdin_write_.Reset();
      input_fd_ = -1;
      return;
    }
    pending_stdin_.erase(0, static_cast<std::size_t>(n));
  }
  if (pending_stdin_.empty() && stdin_done_ && stdin_write_.Valid()) {
    stdin_write_.Reset();
    input_fd_ = -1;
  }
}

void Session::Abandon() {
  KillGroup();
  pollfd pfd{child_.pidfd.Get(), POLLIN, 0};
  while (::poll(&pfd, 1, -1) < 0 && errno == EINTR) {
  }
  processes_.Remove(id_);
  (void)WaitExited(child_);
}

void Session::ReapAndReport() {
  // Everything the process wrote is in its pipes now; what a grandchild writes later is not
  // waited for.
  for (Source& source : sources_) {
    while (source.fd >= 0 && !host_gone_) {
      pollfd pfd{source.fd, POLLIN, 0};
      if (::poll(&pfd, 1, 0) <= 0) break;
      if (!ReadOutput(source)) break;
    }
  }
  processes_.Remove(id_);
  ExitInfo exit = WaitExited(child_);
  if (host_gone_) return;
  v1::AgentResponse response;
  v1::ExitStatus* status = response.mutable_exit();
  status->set_exit_code(exit.exit_code);
  status->set_signal(exit.signal);
  status->set_timed_out(timed_out_);
  status->set_run_us(static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started_).count()));
  (void)conn_.Send(response);
}

}  // namespace

void RunExec(Connection& conn, const v1::ExecRequest& request, ProcessTable& processes) {
  Session(conn, request, processes).Run();
}

}  // namespace ember::agent
