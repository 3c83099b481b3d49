#include "namespaced_init.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>

namespace ember::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

struct ChildArgs {
  const std::string* root;
  const std::string* cmdline;
  int sync_fd;     // read end
  int console_fd;  // write end
};

int ChildMain(void* raw) {
  auto* args = static_cast<ChildArgs*>(raw);
  // Mounts made inside (an image, init's own) must not propagate back to the host.
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(121);
  char byte;
  if (read(args->sync_fd, &byte, 1) != 1) _exit(120);
  if (chroot(args->root->c_str()) != 0 || chdir("/") != 0) _exit(122);
  dup2(args->console_fd, STDOUT_FILENO);
  dup2(args->console_fd, STDERR_FILENO);
  std::string flag = "--cmdline=" + *args->cmdline;
  char* argv[] = {const_cast<char*>("/sbin/ember-init"), flag.data(), nullptr};
  char* envp[] = {nullptr};
  execve(argv[0], argv, envp);
  _exit(123);
}

}  // namespace

NamespacedInit::~NamespacedInit() {
  if (pid_ > 0 && !ended_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (sync_fd_ >= 0) close(sync_fd_);
  if (console_fd_ >= 0) close(console_fd_);
}

std::string NamespacedInit::Clone(const std::string& root, const std::string& cmdline) {
  root_ = root;
  cmdline_ = cmdline;
  int sync[2], console[2];
  if (pipe2(sync, O_CLOEXEC) != 0) return std::string("pipe2: ") + std::strerror(errno);
  if (pipe2(console, O_CLOEXEC) != 0) {
    close(sync[0]);
    close(sync[1]);
    return std::string("pipe2: ") + std::strerror(errno);
  }
  // Without CLONE_VM the child has its own copy of `args`: they may go when this returns.
  ChildArgs args{&root_, &cmdline_, sync[0], console[1]};
  stack_.resize(256 * 1024);
  pid_ = clone(ChildMain, stack_.data() + stack_.size(),
               CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | SIGCHLD, &args);
  int clone_errno = errno;
  close(sync[0]);
  close(console[1]);
  sync_fd_ = sync[1];
  console_fd_ = console[0];
  if (pid_ <= 0) return std::string("clone: ") + std::strerror(clone_errno);
  std::error_code error;
  pid_ns_ = fs::read_symlink("/proc/" + std::to_string(pid_) + "/ns/pid", error);
  if (error) return "reading init's pid namespace: " + error.message();
  return "";
}

void NamespacedInit::Release() {
  if (sync_fd_ < 0) return;
  (void)!write(sync_fd_, "x", 1);
  close(sync_fd_);
  sync_fd_ = -1;
}

std::optional<int> NamespacedInit::WaitForEnd(milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      ended_ = true;
      PumpConsole(100);
      return status;
    }
    PumpConsole(50);
  }
  return std::nullopt;
}

bool NamespacedInit::WaitForConsole(const std::string& text, milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (console_.find(text) == std::string::npos) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    PumpConsole(50);
  }
  return true;
}

const std::string& NamespacedInit::console() {
  PumpConsole(0);
  return console_;
}

std::vector<pid_t> NamespacedInit::ProcessesInNamespace() const {
  std::vector<pid_t> found;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator("/proc", error)) {
    std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code ignored;
    if (fs::read_symlink(entry.path() / "ns/pid", ignored) == pid_ns_) {
      found.push_back(std::stoi(name));
    }
  }
  return found;
}

void NamespacedInit::PumpConsole(int timeout_ms) {
  pollfd fd{console_fd_, POLLIN, 0};
  if (poll(&fd, 1, timeout_ms) <= 0) return;
  char buffer[4096];
  ssize_t got = read(console_fd_, buffer, sizeof(buffer));
  if (got > 0) console_.append(buffer, static_cast<std::size_t>(got));
  if (got == 0) std::this_thread::sleep_for(milliseconds(timeout_ms));
}

}  // namespace ember::testing
