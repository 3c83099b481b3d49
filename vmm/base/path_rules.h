#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::base {

// The directories a host path may lie in (emberd --allow-dir, for every path an API client
// names; ember-vmm --allow-dir, for the paths a restored state file names that no override
// replaces), and the rule every such path (kernel, initrd, drives, log, metrics, vsock socket,
// snapshot dir, restore files) must pass: it lies lexically under an allowed directory and resolves there, from an
// fd of that directory, with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS): neither ".."
// nor a symlink (absolute, or relative and climbing out) nor a /proc magic link leads out.
// A symlink inside must be relative (RESOLVE_BENEATH refuses every absolute one, even one
// that points back inside). A path that does not exist yet (a log, a socket, a new snapshot dir) passes when its nearest
// existing ancestor does, as that is where it will be created.
//
// What Check guarantees: at the moment of the request, the path names a place inside an
// allowed directory. A path used later by name (a socket or log the VMM creates) can still be
// raced by someone who can rename entries inside an allowed directory; OpenFile closes that for
// files that exist (kernel, initrd, drives): the caller keeps the very file that passed. So an
// allowed directory's contents must be writable only by users trusted as much as the API's
// clients are.
//
// Built once at start-up (before emberd's seccomp filter) and then only read: any thread.
class PathRules {
 public:
  // Opens each directory (absolute, existing; symlinks in the directory's own path are
  // followed once, here: the operator named it). INVALID_ARGUMENT naming the bad one.
  // `program` names whose --allow-dir the rule is in messages ("emberd", "ember-vmm").
  // `own`: directories of the program's own, which nothing a client names (a path in a
  // request, a drive or socket in a state file it wrote) may reach: Check, OpenFile, Dirs and
  // Describe leave them out. Only OpenReadOnlyFile reaches kReadOnlyFiles ones (emberd's
  // function images, which every clone of a function attaches), and only OpenPlace (and so
  // OpenAppendFile) kPlaces ones (where emberd has a function VM make its vsock socket). A
  // client's path reaches neither: callers check what a client names by rules without them
  // first, and a path is resolved only beneath the directories it lies in by name.
  struct OwnDir {
    enum class Use { kReadOnlyFiles, kPlaces };
    std::string path;
    Use use = Use::kReadOnlyFiles;
  };
  [[nodiscard]] static absl::StatusOr<PathRules> Open(const std::vector<std::string>& dirs,
                                                      const std::string& program = "emberd",
                                                      const std::vector<OwnDir>& own = {});

  // OK when `path` passes the rule; otherwise INVALID_ARGUMENT "<field>: <why>, <the rule>".
  // An empty path is OK (the caller decides whether the field is required).
  [[nodiscard]] absl::Status Check(const std::string& field, const std::string& path) const;

  // Check's rule for a file that must exist (a kernel, an initrd, a drive), and the file
  // itself: an O_PATH fd of what passed, resolved once. Whoever uses the file through it
  // (a VMM reopening /proc/self/fd/N, or a hard link made from it) gets what was checked, even
  // if the name is swapped for a symlink a moment later. Otherwise INVALID_ARGUMENT as Check
  // ("<field>: <path> does not exist; <the rule>" for a missing file), and for anything but a
  // regular file or a block device (a FIFO would block whoever opened it to read).
  [[nodiscard]] absl::StatusOr<base::UniqueFd> OpenFile(const std::string& field,
                                                        const std::string& path) const;

  // OpenFile's rule widened to the kReadOnlyFiles directories too: for a file its caller hands
  // on only to be read (a drive that emberd's own configuration makes read-only), never for a
  // path a client chose.
  [[nodiscard]] absl::StatusOr<base::UniqueFd> OpenReadOnlyFile(const std::string& field,
                                                                const std::string& path) const;

  // A place where a file is to be made, and made again, by name (a socket a VMM binds, a
  // metrics file it rewrites by rename): Check's rule for `path` (the kPlaces directories
  // admitted too), then the directory it lies
  // in, resolved once by the rule (an O_PATH fd: `dir`), and its last component (`name`). Who
  // names the place as "/proc/self/fd/<dir>/<name>" makes it in that very directory, even if a
  // parent's name is swapped for a symlink out a moment later. INVALID_ARGUMENT as Check, and
  // when the directory does not exist or `path` ends in no file name.
  struct Place {
    base::UniqueFd dir;
    std::string name;
  };
  [[nodiscard]] absl::StatusOr<Place> OpenPlace(const std::string& field,
                                                const std::string& path) const;

  // A file to append to on a client's behalf (a VMM's log): opened (made 0600 when missing)
  // write-only in OpenPlace's directory with O_NOFOLLOW and O_NONBLOCK, and kept only if it is
  // a regular file with one link owned by this process's uid: never a symlink, a FIFO (opening
  // one would block), a device, another user's file or a hard link to one. INVALID_ARGUMENT
  // naming the field otherwise.
  [[nodiscard]] absl::StatusOr<base::UniqueFd> OpenAppendFile(const std::string& field,
                                                              const std::string& path) const;

  // The allowed directories as the operator named them (normalised), for messages and logs;
  // not the read-only ones.
  [[nodiscard]] std::string Describe() const;
  // The same, one per entry (what emberd hands on as ember-vmm --allow-dir: the rule for what a
  // state file names is the client's, never wider).
  [[nodiscard]] std::vector<std::string> Dirs() const;
  // No client's directory (own ones aside): nothing a client names can pass.
  [[nodiscard]] bool empty() const;

 private:
  struct Dir {
    std::string name;  // as given, without trailing '/'
    std::string real;  // its canonical path (differs when `name` passes through a symlink)
    base::UniqueFd fd;  // O_PATH | O_DIRECTORY
    std::optional<OwnDir::Use> own;  // none: a client's directory
  };
  // OK, or why `relative` (under `dir`) escapes or cannot be resolved. With `opened`, the path
  // must exist, and *opened becomes its O_PATH fd.
  [[nodiscard]] absl::Status Resolve(const Dir& dir, const std::string& relative,
                                     base::UniqueFd* opened) const;
  // Check and OpenFile (with `opened`), over the clients' directories and the own ones of
  // `also` (none: only the clients').
  [[nodiscard]] absl::Status Match(const std::string& field, const std::string& path,
                                   base::UniqueFd* opened,
                                   std::optional<OwnDir::Use> also = std::nullopt) const;
  // OpenFile and OpenReadOnlyFile.
  [[nodiscard]] absl::StatusOr<base::UniqueFd> OpenExisting(
      const std::string& field, const std::string& path,
      std::optional<OwnDir::Use> also) const;

  std::vector<Dir> dirs_;
  std::string program_ = "emberd";
  uid_t uid_ = 0;  // this process's euid at Open (emberd's seccomp filter has no geteuid)
};

}  // namespace ember::base
