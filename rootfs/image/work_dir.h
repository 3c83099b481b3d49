#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::rootfs {

// The names in the directory open at `dir_fd`, without "." and ".."; `display` names it in
// errors.
[[nodiscard]] absl::StatusOr<std::vector<std::string>> ListDirectory(int dir_fd,
                                                                     const std::string& display);

// Removes `name` in the directory open at `dir_fd`, and everything under it when it is a
// directory, without following symlinks. Nothing there is not an error.
[[nodiscard]] absl::Status RemoveAll(int dir_fd, const std::string& name);

// ember-rootfs's scratch directory (the staged tree, the image config), removed with
// everything in it when dropped. Move-only.
class WorkDir {
 public:
  // Makes "<prefix>XXXXXX", mode 0700.
  [[nodiscard]] static absl::StatusOr<WorkDir> Create(const std::string& prefix);

  WorkDir(WorkDir&& other) noexcept
      : path_(std::exchange(other.path_, {})), fd_(std::move(other.fd_)) {}
  WorkDir& operator=(WorkDir&&) = delete;
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
  ~WorkDir();

  [[nodiscard]] const std::string& path() const { return path_; }
  // Open for the *at calls; borrowed.
  [[nodiscard]] int fd() const { return fd_.Get(); }

 private:
  WorkDir(std::string path, base::UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}

  std::string path_;  // empty once moved from
  base::UniqueFd fd_;
};

}  // namespace ember::rootfs
