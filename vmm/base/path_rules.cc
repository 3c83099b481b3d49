#include "vmm/base/path_rules.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "vmm/base/status.h"

namespace ember::base {
namespace {

// openat2 has no glibc wrapper on every distribution this builds on.
int OpenBeneath(int dir_fd, const std::string& relative, std::uint64_t flags) {
  open_how how{};
  how.flags = flags | O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(::syscall(SYS_openat2, dir_fd, relative.c_str(), &how, sizeof(how)));
}

std::string WithoutTrailingSlashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

}  // namespace

absl::StatusOr<PathRules> PathRules::Open(const std::vector<std::string>& dirs,
                                          const std::string& program,
                                          const std::vector<OwnDir>& own) {
  PathRules rules;
  rules.program_ = program;
  rules.uid_ = ::geteuid();
  std::vector<std::pair<std::string, std::optional<OwnDir::Use>>> all;
  for (const std::string& given : dirs) all.emplace_back(given, std::nullopt);
  for (const OwnDir& dir : own) all.emplace_back(dir.path, dir.use);
  for (const auto& [given, use] : all) {
    if (given.empty() || given.front() != '/') {
      return absl::InvalidArgumentError("--allow-dir: \"" + given +
                                        "\" is not an absolute path");
    }
    Dir dir;
    dir.name = WithoutTrailingSlashes(given);
    dir.fd.Reset(::open(dir.name.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir.fd) {
      return absl::InvalidArgumentError("--allow-dir: cannot open directory " + dir.name + ": " +
                                        std::strerror(errno));
    }
    char real[PATH_MAX];
    if (::realpath(dir.name.c_str(), real) == nullptr) {
      return absl::InvalidArgumentError("--allow-dir: realpath " + dir.name + ": " +
                                        std::strerror(errno));
    }
    dir.real = real;
    dir.own = use;
    rules.dirs_.push_back(std::move(dir));
  }
  return rules;
}

std::string PathRules::Describe() const {
  std::string text;
  for (const std::string& name : Dirs()) text += (text.empty() ? "" : ", ") + name;
  return text.empty() ? "none" : text;
}

std::vector<std::string> PathRules::Dirs() const {
  std::vector<std::string> names;
  for (const Dir& dir : dirs_) {
    if (!dir.own) names.push_back(dir.name);
  }
  return names;
}

bool PathRules::empty() const { return Dirs().empty(); }

absl::Status PathRules::Resolve(const Dir& dir, const std::string& relative,
                                base::UniqueFd* opened) const {
  if (opened != nullptr) {
    // The file itself, resolved once: what the caller holds is what passed.
    opened->Reset(OpenBeneath(dir.fd.Get(), relative.empty() ? "." : relative, 0));
    if (*opened) return absl::OkStatus();
    if (errno == ENOENT) return absl::NotFoundError("does not exist");
  }
  // Walk up from the path to its nearest existing ancestor: a missing tail is created later
  // inside whatever that ancestor is, so the ancestor is what must stay beneath `dir`.
  std::string candidate = relative;
  for (;;) {
    if (candidate.empty()) return absl::OkStatus();  // the allowed directory itself
    base::UniqueFd fd(OpenBeneath(dir.fd.Get(), candidate, 0));
    if (fd) return absl::OkStatus();
    const int err = errno;
    if (err == EXDEV) {
      return absl::PermissionDeniedError("leads out of " + dir.name +
                                         " (through a symlink that is absolute or climbs out)");
    }
    if (err == ELOOP) {
      return absl::PermissionDeniedError("passes a /proc magic link or too many symlinks");
    }
    if (err != ENOENT) {
      return absl::PermissionDeniedError("cannot be resolved: " + std::string(std::strerror(err)));
    }
    std::size_t slash = candidate.find_last_of('/');
    candidate = slash == std::string::npos ? std::string() : candidate.substr(0, slash);
  }
}

absl::Status PathRules::Check(const std::string& field, const std::string& path) const {
  if (path.empty()) return absl::OkStatus();
  return Match(field, path, nullptr);
}

absl::StatusOr<base::UniqueFd> PathRules::OpenFile(const std::string& field,
                                                   const std::string& path) const {
  return OpenExisting(field, path, std::nullopt);
}

absl::StatusOr<base::UniqueFd> PathRules::OpenReadOnlyFile(const std::string& field,
                                                           const std::string& path) const {
  return OpenExisting(field, path, OwnDir::Use::kReadOnlyFiles);
}

absl::StatusOr<base::UniqueFd> PathRules::OpenExisting(const std::string& field,
                                                       const std::string& path,
                                                       std::optional<OwnDir::Use> also) const {
  base::UniqueFd opened;
  EMBER_RETURN_IF_ERROR(Match(field, path, &opened, also));
  // Only files a VMM can read as a kernel or serve as a disk: opening a FIFO (or a socket's
  // name) would block the opener, the fork server included, until some writer came along.
  struct stat st {};
  if (::fstat(opened.Get(), &st) != 0) return base::ErrnoError("fstat", field + " (" + path + ")");
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return absl::InvalidArgumentError(field + ": " + path +
                                      " is not a regular file or a block device");
  }
  return opened;
}

absl::StatusOr<PathRules::Place> PathRules::OpenPlace(const std::string& field,
                                                     const std::string& path) const {
  EMBER_RETURN_IF_ERROR(Match(field, path, nullptr, OwnDir::Use::kPlaces));
  const std::size_t slash = path.find_last_of('/');
  Place place;
  place.name = path.substr(slash + 1);
  if (place.name.empty() || place.name == ".") {
    return absl::InvalidArgumentError(field + ": " + path + " names no file");
  }
  const std::string parent = slash == 0 ? "/" : path.substr(0, slash);
  absl::Status opened = Match(field, parent, &place.dir, OwnDir::Use::kPlaces);
  struct stat st {};
  if (opened.ok() && (::fstat(place.dir.Get(), &st) != 0 || !S_ISDIR(st.st_mode))) {
    opened = absl::InvalidArgumentError(field + ": " + parent + " is not a directory");
  }
  if (!opened.ok()) {
    return absl::InvalidArgumentError(field + ": " + path + ": its directory cannot be used (" +
                                      std::string(opened.message()) + ")");
  }
  return place;
}

absl::StatusOr<base::UniqueFd> PathRules::OpenAppendFile(const std::string& field,
                                                         const std::string& path) const {
  EMBER_ASSIGN_OR_RETURN(Place place, OpenPlace(field, path));
  base::UniqueFd file(::openat(place.dir.Get(), place.name.c_str(),
                               O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK |
                                   O_NOCTTY | O_CLOEXEC,
                               0600));
  const std::string refused = field + ": " + path + " is not a regular file of " + program_ +
                              "'s own (uid " + std::to_string(uid_) + ") with one link";
  // ELOOP: a symlink; ENXIO: a FIFO no one reads; EISDIR: a directory.
  if (!file && (errno == ELOOP || errno == ENXIO || errno == EISDIR)) {
    return absl::InvalidArgumentError(refused + ": " + std::strerror(errno));
  }
  if (!file) {
    return absl::InvalidArgumentError(field + ": cannot open " + path + ": " +
                                      std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(file.Get(), &st) != 0) return base::ErrnoError("fstat", field + " (" + path + ")");
  if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || st.st_uid != uid_) {
    return absl::InvalidArgumentError(refused);
  }
  return file;
}

absl::Status PathRules::Match(const std::string& field, const std::string& path,
                              base::UniqueFd* opened, std::optional<OwnDir::Use> also) const {
  const std::string rule = "host paths must lie under a directory " + program_ +
                           " allows (--allow-dir: " + Describe() +
                           "), without symlinks or \"..\" leading out";
  if (path.empty() || path.front() != '/' || path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(field + ": " + path + " is not an absolute path; " +
                                      rule);
  }
  // A ".." is never needed in an absolute path and would make the walk over a missing tail
  // (Resolve) unsound: "dir/missing/../../x" is checked as "dir" but created elsewhere.
  for (std::size_t start = 0; start < path.size();) {
    std::size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    if (path.compare(start, end - start, "..") == 0) {
      return absl::InvalidArgumentError(field + ": " + path + " contains \"..\"; " + rule);
    }
    start = end + 1;
  }
  absl::Status first_refusal;
  for (const Dir& dir : dirs_) {
    if (dir.own && dir.own != also) continue;
    for (const std::string* spelling : {&dir.name, &dir.real}) {
      const std::string& prefix = *spelling;
      std::string relative;
      if (path == prefix) {
        relative.clear();
      } else if (prefix == "/") {
        relative = path.substr(1);
      } else if (path.size() > prefix.size() && path.compare(0, prefix.size(), prefix) == 0 &&
                 path[prefix.size()] == '/') {
        relative = path.substr(prefix.size() + 1);
      } else {
        continue;
      }
      while (!relative.empty() && relative.front() == '/') relative.erase(0, 1);
      absl::Status resolved = Resolve(dir, relative, opened);
      if (resolved.ok()) return resolved;
      if (first_refusal.ok()) first_refusal = resolved;
    }
  }
  if (!first_refusal.ok()) {
    return absl::InvalidArgumentError(field + ": " + path + " " +
                                      std::string(first_refusal.message()) + "; " + rule);
  }
  return absl::InvalidArgumentError(field + ": " + path +
                                    " is outside the allowed directories; " + rule);
}

}  // namespace ember::base
