#include "vmm/emberd/launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>

#include <cstring>

#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

extern char** environ;

namespace ember::emberd {

// The fd number ember-vmm finds its control socket at.
constexpr int kChildControlFd = 3;

absl::StatusOr<pid_t> DirectLauncher::Launch(const LaunchSpec& spec) {
  std::vector<std::string> args = {vmm_binary_};
  args.insert(args.end(), spec.vmm_args.begin(), spec.vmm_args.end());
  args.push_back("--control-fd");
  args.push_back(std::to_string(kChildControlFd));
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, spec.stderr_fd, 2);
  // dup2 clears FD_CLOEXEC on the copy; every other fd of emberd is close-on-exec.
  posix_spawn_file_actions_adddup2(&actions, spec.control_listen_fd, kChildControlFd);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own session: a terminal's signals to emberd do not reach the VMs, and VMs outlive
  // an emberd restart. Signal mask and dispositions reset to defaults.
  sigset_t empty;
  sigemptyset(&empty);
  // emberd ignores SIGPIPE; ignored signals would stay ignored across exec.
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  pid_t pid = 0;
  int err = ::posix_spawn(&pid, vmm_binary_.c_str(), &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (err != 0) return base::ErrnoError(err, "posix_spawn", vmm_binary_);
  return pid;
}

}  // namespace ember::emberd
