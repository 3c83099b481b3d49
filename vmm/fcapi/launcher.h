#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::fcapi {

// Starts ember-vmm for the API front from a helper process forked before the front installs
// its seccomp filter. A filter survives fork and exec: an ember-vmm the filtered front started
// itself would run under the front's allowlist too, which would then have to allow exec and
// all that ember-vmm does before its own filters. Started by the unfiltered helper, ember-vmm
// starts clean and the front's filter allows neither fork nor exec.
//
// The helper forks a middle process that forks ember-vmm and exits at once; the front is a
// child subreaper, so ember-vmm is re-parented to the front, which reaps it with waitpid. Once
// re-parented, ember-vmm asks for SIGKILL when the front dies (PR_SET_PDEATHSIG), as a child the
// front forked itself would. The helper dies with the front, or when its socket closes.
class Launcher {
 public:
  // Forks the helper, which will only ever run `binary` and pass one fd to it as the value of
  // `fd_flag` (so a compromised front cannot make it run anything else). Makes this process a
  // child subreaper. Call while single-threaded.
  [[nodiscard]] static absl::StatusOr<Launcher> Start(const std::string& binary,
                                                      const std::string& fd_flag);

  // Runs the binary with `args` and `fd` (borrowed) inherited, `fd_flag` and the fd's number
  // in the new process appended. Returns the pid (this process's child).
  [[nodiscard]] absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args, int fd);

 private:
  explicit Launcher(base::UniqueFd socket) : socket_(std::move(socket)) {}
  base::UniqueFd socket_;
};

}  // namespace ember::fcapi
