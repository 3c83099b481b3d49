#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::runtime {

// A file read out of a bind mount's source, to be written in the guest.
struct CopiedFile {
  std::string relative;  // below the source directory; empty for a file source
  std::string contents;
  uint32_t mode = 0644;  // permission bits of the file read
};

// The source of a bind mount that is copied into a guest (docs/ember-runtime.md, "Mounts"),
// held open so that what is read is what was checked. Reading runs as root on files a tenant
// may control (a read-only volume, an NFS share), so beneath the source nothing is opened by a
// path that could lead out of it, only regular files are read, through the descriptor that was
// checked, non-blocking (a FIFO cannot hang the runtime) and never past the budget.
// Move-only; any thread.
class BindSource {
 public:
  // Opens `path`, the mount's source as the caller (containerd, podman, kubelet) names it,
  // following symlinks in it as a bind mount does. NotFound when it is neither a regular file
  // nor a directory (a device, a FIFO, nothing): neither is opened.
  [[nodiscard]] static absl::StatusOr<BindSource> Open(const std::filesystem::path& path);

  [[nodiscard]] bool is_directory() const { return directory_; }

  // A file source's contents and mode. `budget`: the bytes still allowed for all copies of one
  // container; charged with what is read. InvalidArgument past the budget or when the file grew
  // while it was read.
  [[nodiscard]] absl::StatusOr<CopiedFile> ReadFile(std::size_t* budget) const;

  // Every regular file beneath a directory source, in name order, `budget` charged with each
  // name visited and each file's contents. Entries whose name starts with ".." are not visited
  // (Kubernetes' ..data and ..TIMESTAMP hold what the visible names link to). A symlink is
  // followed only while it stays beneath the source (Kubernetes' `key -> ..data/key`); one
  // that leads out (absolute, or through "..") is InvalidArgument naming it: under runc it would
  // resolve inside the container, never to the host's file a copy would read. A symlink to a
  // directory inside is walked under its own name, unless it leads back to a directory being
  // walked. A symlink to nothing, and FIFOs, sockets and devices, are not copied (only regular
  // files are).
  [[nodiscard]] absl::StatusOr<std::vector<CopiedFile>> ReadTree(std::size_t* budget) const;

 private:
  BindSource(std::filesystem::path path, base::UniqueFd fd, bool directory)
      : path_(std::move(path)), fd_(std::move(fd)), directory_(directory) {}

  std::filesystem::path path_;
  base::UniqueFd fd_;  // O_RDONLY; O_DIRECTORY for a directory
  bool directory_ = false;
};

}  // namespace ember::runtime
