#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::emberd {

// Network namespaces held by fd. A namespace lives while an fd, a bind mount or a process
// holds it; its taps and veth ends go with it.
//
// The calling thread moves into `netns_fd` (setns) for the life of the object and back to
// where it was in the destructor. Only this thread moves: sockets, taps and processes it
// creates meanwhile (fork and posix_spawn included) belong to that namespace. Use on one thread,
// no other namespace switch nested inside it out of order. A thread that cannot return is a
// broken invariant (it would act on the wrong namespace from then on): the destructor aborts.
class ScopedNetns {
 public:
  [[nodiscard]] static absl::StatusOr<ScopedNetns> Enter(int netns_fd);
  ScopedNetns(ScopedNetns&&) = default;
  ScopedNetns& operator=(ScopedNetns&&) = delete;
  ~ScopedNetns();

 private:
  friend absl::StatusOr<base::UniqueFd> NewNetns();
  explicit ScopedNetns(base::UniqueFd original) : original_(std::move(original)) {}
  base::UniqueFd original_;  // the namespace to return to; invalid once moved from
};

// A new, empty network namespace (only a down `lo`), returned as an fd (O_CLOEXEC); the calling
// thread stays in its own. Needs CAP_SYS_ADMIN.
[[nodiscard]] absl::StatusOr<base::UniqueFd> NewNetns();

// The calling thread's network namespace, as an fd.
[[nodiscard]] absl::StatusOr<base::UniqueFd> CurrentNetns();

// Gives `netns_fd` a name as `ip netns add` does: an empty file `path` with the namespace bind
// mounted on it, so that a process can join it by path (ember-jailer --netns). The mount
// holds the namespace until UnnameNetns. `path`'s directory is made (0755) when missing;
// AlreadyExists when `path` does.
[[nodiscard]] absl::Status NameNetns(int netns_fd, const std::string& path);
// Unmounts and removes what NameNetns made; OK when `path` is already gone.
[[nodiscard]] absl::Status UnnameNetns(const std::string& path);

}  // namespace ember::emberd
