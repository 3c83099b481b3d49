#include "vmm/base/atomic_file.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

#include "vmm/base/status.h"

namespace ember::base {
namespace {

// Where `path` lives, for the directory fsync.
std::string DirectoryOf(const std::string& path) {
  std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

constexpr char kTempInfix[] = ".tmp-";

// PATH.tmp-PID-N-NANOS: the pid and counter tell this process's writers apart, the clock the
// writers of processes sharing a pid number (jails with their own pid namespace). Not
// mkostemp: glibc may draw its name from getrandom, which the VMM's seccomp filter lacks.
std::string TempName(const std::string& path) {
  static std::atomic<std::uint64_t> counter{0};
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return path + kTempInfix + std::to_string(::getpid()) + "-" + std::to_string(counter++) +
         "-" + std::to_string(now.tv_nsec);
}

}  // namespace

absl::StatusOr<AtomicFile> AtomicFile::Create(const std::string& path, mode_t mode,
                                              int dir_fd) {
  for (int attempt = 0;; ++attempt) {
    std::string temp = TempName(path);
    UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
    if (fd) return AtomicFile(path, std::move(temp), std::move(fd), dir_fd);
    // EEXIST: a crashed writer's leftover, or a clash; another name will do.
    if (errno != EEXIST || attempt == 100) return ErrnoError("open", temp);
  }
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : path_(std::move(other.path_)),
      temp_path_(std::exchange(other.temp_path_, std::string())),
      fd_(std::move(other.fd_)),
      dir_fd_(other.dir_fd_) {}

AtomicFile& AtomicFile::operator=(AtomicFile&& other) noexcept {
  if (this != &other) {
    Discard();
    path_ = std::move(other.path_);
    temp_path_ = std::exchange(other.temp_path_, std::string());
    fd_ = std::move(other.fd_);
    dir_fd_ = other.dir_fd_;
  }
  return *this;
}

AtomicFile::~AtomicFile() { Discard(); }

void AtomicFile::Discard() {
  fd_.Reset();
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
  temp_path_.clear();
}

absl::Status AtomicFile::Append(std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd_.Get(), bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("write", temp_path_);
    if (n == 0) return ErrnoError(EIO, "write (no progress)", temp_path_);
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status AtomicFile::Commit(Durability durability) {
  const bool durable = durability == Durability::kDurable;
  if (durable && ::fsync(fd_.Get()) != 0) {
    absl::Status error = ErrnoError("fsync", temp_path_);
    Discard();
    return error;
  }
  fd_.Reset();
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    absl::Status error = ErrnoError("rename", temp_path_ + " to " + path_);
    Discard();
    return error;
  }
  temp_path_.clear();
  if (!durable) return absl::OkStatus();
  // The rename itself is durable only once the directory is.
  if (dir_fd_ >= 0) {
    if (::fsync(dir_fd_) != 0) return ErrnoError("fsync directory", DirectoryOf(path_));
    return absl::OkStatus();
  }
  std::string dir = DirectoryOf(path_);
  UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd) return ErrnoError("open directory", dir);
  if (::fsync(dir_fd.Get()) != 0) return ErrnoError("fsync directory", dir);
  return absl::OkStatus();
}

bool IsAtomicFileTemp(const std::string& name, const std::string& target) {
  return name.rfind(target + kTempInfix, 0) == 0;
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes, mode_t mode,
                                 AtomicFile::Durability durability, int dir_fd) {
  EMBER_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(path, mode, dir_fd));
  EMBER_RETURN_IF_ERROR(file.Append(bytes));
  return file.Commit(durability);
}

}  // namespace ember::base
