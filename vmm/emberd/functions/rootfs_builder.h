#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::emberd::functions {

// Builds functions' root images from OCI image archives with ember-rootfs, in a helper process:
// emberd's seccomp filter lets it exec nothing, so the helper is forked before the filter (as
// the fork server is) and spawns ember-rootfs on emberd's requests, one at a time, over a
// socket pair. It exits when emberd closes its end or dies (PR_SET_PDEATHSIG). ember-rootfs
// parses a client's archive: it runs with no new privileges, in a process group of its own,
// with only its stdio and the archive open, killed when the helper dies or when its build
// takes longer than the timeout (the deploy then fails, and the next build can start). When
// emberd runs as root, ember-rootfs does not: it runs as the builder id (uid and gid, no other
// group), in new pid, network and ipc namespaces (the init of its pid namespace, so nothing it
// starts outlives it), in a build directory of its own beside the image, which it reaches as
// its working directory (emberd's state directory is root's 0700), reading the archive from
// the fd it inherits; the image it leaves there becomes root's before it is installed.
class RootfsBuilder {
 public:
  static constexpr std::chrono::milliseconds kDefaultTimeout{300'000};
  // Just below ember-jailer's default VM ids (830001 on): far above the ids distributions give
  // to users and system accounts. No file on the host is this id's.
  static constexpr std::uint32_t kDefaultBuilderId = 829999;
  // ember-rootfs --max-bytes: what an archive may expand to while it is staged (emberd
  // --fn-max-image-mib), so that a small archive of compressed zeros cannot fill emberd's disk.
  static constexpr std::uint64_t kDefaultMaxBytes = std::uint64_t{4096} << 20;

  // Forks the helper for the ember-rootfs binary `tool`, whose builds are killed after
  // `timeout` and refused past `max_bytes`. Called by emberd's main thread while it is the only
  // thread and holds nothing a helper should not keep (before the state directory's lock).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RootfsBuilder>> Start(
      std::string tool, std::chrono::milliseconds timeout = kDefaultTimeout,
      std::uint32_t builder_id = kDefaultBuilderId, std::uint64_t max_bytes = kDefaultMaxBytes);
  ~RootfsBuilder() = default;  // the socket closes: the helper exits

  // Builds the image of the OCI archive open at `archive` (borrowed) into the new file `image`
  // (a directory `image`.build beside it meanwhile), root's when emberd is,
  // readable by everyone (a jailed VMM reads its link; the cache's directory keeps others
  // out). An archive ember-rootfs refuses is INVALID_ARGUMENT naming oci_archive_path with its
  // message (an archive expanding past max_bytes is one); a build past the timeout is
  // DEADLINE_EXCEEDED naming it. Any thread; builds are serialised.
  [[nodiscard]] absl::Status Build(int archive, const std::string& image);

 private:
  RootfsBuilder(base::UniqueFd socket, pid_t helper_pid)
      : socket_(std::move(socket)), helper_pid_(helper_pid) {}

  std::mutex mu_;
  base::UniqueFd socket_;  // guarded by mu_: one request and its reply at a time
  pid_t helper_pid_;
};

}  // namespace ember::emberd::functions
