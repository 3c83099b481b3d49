#include "vmm/emberd/launcher.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <string_view>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>

#include "jailer/cgroup.h"
#include "jailer/jail.h"
#include "vmm/base/helper_process.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/emberd/store.h"

extern char** environ;

namespace ember::emberd {
namespace {

// The fd number ember-vmm finds its control socket at.
constexpr int kChildControlFd = 3;
// A request is strings each ended by a NUL: kRequestTag, the VM id, the network namespace's
// path (LaunchSpec::netns_path, often empty), the number N of jail files,
// N pairs (the JailFile's How character followed by its jail name; its host path), the number M
// of jailer option pairs, M pairs (flag, value), then ember-vmm's arguments; with the control and stderr fds attached (SCM_RIGHTS, in that order).
// After those two come the LaunchSpec's files, if any; a jail file's host path "#I" names the
// I-th of them.
// The tag keeps a request from ever being empty, which on a SEQPACKET socket would read as
// emberd closing it. Paths under the state dir keep a request far below kMaxRequest.
// kSlotTag: the same for a VMM pool slot (the VM id is the slot's name; no files, ember-vmm's
// arguments only --pool-slot): jailed in the pool's directory and cgroup (kPoolJailDir).
// kClaimTag: a slot claimed for a VM (ForkServerLauncher::ClaimSlot): no namespace, ember-vmm's
// arguments only the slot's name, and instead of the control and stderr fds the slot's pidfd
// twice.
constexpr char kRequestTag[] = "ember-spawn-v5";
constexpr char kSlotTag[] = "ember-slot-v5";
constexpr char kClaimTag[] = "ember-claim-v5";
enum class RequestKind { kVm, kSlot, kClaim };
constexpr std::size_t kMaxRequest = 64 * 1024;
constexpr int kRequestFds = 2;
// Where the helper keeps a request's files while it spawns: above every fd a VMM gets them at.
constexpr int kHeldFileFds = 128;

// The helper's answer: posix_spawn's error (0 on success, kMalformed for a request it could not
// read) and ember-vmm's pid; `jail_step` is non-zero when the error is from preparing the jail
// (the index + 1 of the JailFile, or kJailDirStep for the directory itself).
constexpr std::int32_t kMalformed = -1;
constexpr std::int32_t kJailDirStep = 1000000;
// A claim's steps after the files (ClaimSlotJail).
constexpr std::int32_t kClaimSlotStep = 1000001;     // the pidfd is not the slot's jailed VMM
constexpr std::int32_t kClaimDevicesStep = 1000002;  // its device nodes
constexpr std::int32_t kClaimLimitsStep = 1000003;   // its options
constexpr std::int32_t kClaimCgroupStep = 1000004;   // its cgroup
constexpr std::int32_t kClaimTapStep = 1000005;      // its taps
struct SpawnReply {
  std::int32_t error = 0;
  std::int32_t pid = 0;
  std::int32_t jail_step = 0;
};

std::string Basename(const std::string& path) {
  std::size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// mkdir -p, 0755.
int MakeDirs(const std::string& path) {
  for (std::size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) return errno;
  }
  return 0;
}

// Copies only a regular file: `from` is opened without blocking and checked first, so a FIFO
// (or a device) there fails at once instead of stalling the single-threaded fork server.
int CopyFile(const std::string& from, const std::string& to, mode_t mode) {
  base::UniqueFd in(::open(from.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!in) return errno;
  struct stat st {};
  if (::fstat(in.Get(), &st) != 0) return errno;
  if (!S_ISREG(st.st_mode)) return EINVAL;
  base::UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!out) return errno;
  return CopySparse(in.Get(), out.Get());
}

// A private copy for the jail: root's, so the VMM cannot change it; its gid may read it,
// nobody else (a snapshot's memory).
int CopyOwned(const std::string& from, const std::string& to, gid_t gid) {
  ::unlink(to.c_str());
  if (int err = CopyFile(from, to, 0440); err != 0) return err;
  if (::chown(to.c_str(), 0, gid) != 0) return errno;
  return ::chmod(to.c_str(), 0440) == 0 ? 0 : errno;
}

// Puts `file` into the jail root `root` of a VMM of group `gid` (in the helper, as root, before
// the jailer runs). A file for the output directory goes into it now; the jailer gives the
// directory to the jail.
int PlaceJailFile(const JailFile& file, const std::string& root, gid_t gid) {
  std::string target = root + "/" + file.jail_name;
  if (file.jail_name.find('/') != std::string::npos) {
    if (int err = MakeDirs(root + "/" + kJailOutputDir); err != 0) return err;
  }
  switch (file.how) {
    case JailFile::How::kCopy:
      return CopyOwned(file.host_path, target, gid);
    case JailFile::How::kLinkOrCopy:
    case JailFile::How::kLink:
      ::unlink(target.c_str());
      // A symlink's target, not the symlink: inside the jail it would point nowhere.
      if (::linkat(AT_FDCWD, file.host_path.c_str(), AT_FDCWD, target.c_str(),
                   AT_SYMLINK_FOLLOW) == 0) {
        return 0;
      }
      if (errno != EXDEV || file.how == JailFile::How::kLink) return errno;
      return CopyOwned(file.host_path, target, gid);
    case JailFile::How::kSymlinkHost:
      ::unlink(file.host_path.c_str());
      return ::symlink(target.c_str(), file.host_path.c_str()) == 0 ? 0 : errno;
  }
  return EINVAL;
}

// Whether FILE=VALUE is a limit emberd sets on a VM's cgroup (JailedView), in `cgroups`'
// version, as a number.
bool IsVmCgroupLimit(const JailCgroups& cgroups, const std::string& setting) {
  const std::size_t eq = setting.find('=');
  if (eq == std::string::npos || eq + 1 == setting.size()) return false;
  const std::string file = setting.substr(0, eq);
  const bool known = cgroups.version == 2
                         ? file == "memory.max" || file == "pids.max" || file == "cpu.weight"
                         : cgroups.version == 1 && (file == "memory.limit_in_bytes" ||
                                                    file == "pids.max" || file == "cpu.shares");
  return known && setting.find_first_not_of("0123456789", eq + 1) == std::string::npos;
}

// Checks a jailed VM's ember-jailer options (flag and value pairs, LaunchSpec::jailer_args):
// only per-VM options, since paths and namespaces are the helper's own, and an identity of
// `ids`: --uid and --gid once each, the same VM id, and --supplementary-gid only the snapshot
// group; --cgroup only the limits of `cgroups`' version. Returns the VM's gid, or nullopt for a
// request to refuse.
std::optional<gid_t> CheckJailerOptions(const JailIds& ids, const JailCgroups& cgroups,
                                        const std::vector<std::string>& options) {
  std::optional<std::uint64_t> uid;
  std::optional<std::uint64_t> gid;
  auto number = [](const std::string& text) -> std::optional<std::uint64_t> {
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
    return value;
  };
  for (std::size_t i = 0; i + 1 < options.size(); i += 2) {
    const std::string& flag = options[i];
    const std::string& value = options[i + 1];
    if (flag == "--uid" || flag == "--gid") {
      std::optional<std::uint64_t>& id = flag == "--uid" ? uid : gid;
      if (id.has_value()) return std::nullopt;
      id = number(value);
      if (!id || !ids.IsVmId(*id)) return std::nullopt;
    } else if (flag == "--supplementary-gid") {
      if (number(value) != std::optional<std::uint64_t>(ids.snapshot_gid())) return std::nullopt;
    } else if (flag == "--cgroup") {
      if (!IsVmCgroupLimit(cgroups, value)) return std::nullopt;
    } else if (flag != "--device" && flag != "--tap" && flag != "--resource-limit") {
      return std::nullopt;
    }
  }
  if (!uid || !gid || *uid != *gid) return std::nullopt;
  return static_cast<gid_t>(*gid);
}

// posix_spawns `binary` with `vmm_args` in its own session: stdin/stdout on /dev/null, stderr
// on stderr_fd, the control socket at kChildControlFd, signals at their defaults.
// Unjailed, the files at kFirstFileFd on (`file_fds`, which lie above them: kHeldFileFds).
SpawnReply SpawnVmm(const std::string& binary, const std::optional<JailerConfig>& jail,
                    bool pool_slot, const std::string& vm_id, const std::string& netns_path,
                    const std::vector<std::string>& jailer_args,
                    std::vector<std::string> vmm_args, int control_fd, int stderr_fd,
                    const std::vector<int>& file_fds) {
  std::vector<std::string> args = {binary};
  const std::string* exec = &binary;
  if (jail) {
    const std::string pool = pool_slot ? std::string("/") + kPoolJailDir : "";
    args = {jail->jailer,        "--id",           vm_id,
            "--exec-file",       binary,           "--chroot-base-dir",
            jail->chroot_base + pool, "--pass-fd", std::to_string(kChildControlFd)};
    if (jail->new_pid_ns) args.push_back("--new-pid-ns");
    if (jail->isolate) args.push_back("--isolate");
    if (!netns_path.empty()) args.insert(args.end(), {"--netns", netns_path});
    args.insert(args.end(), jailer_args.begin(), jailer_args.end());
    if (std::find(jailer_args.begin(), jailer_args.end(), "--cgroup") != jailer_args.end()) {
      args.insert(args.end(), {"--cgroup-version", std::to_string(jail->cgroups.version),
                               "--parent-cgroup", jail->cgroups.parent + pool});
    }
    args.push_back("--");
    exec = &jail->jailer;
  }
  args.insert(args.end(), vmm_args.begin(), vmm_args.end());
  args.push_back("--control-fd");
  args.push_back(std::to_string(kChildControlFd));
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, stderr_fd, 2);
  // dup2 clears FD_CLOEXEC on the copy; every other fd of the helper is close-on-exec.
  posix_spawn_file_actions_adddup2(&actions, control_fd, kChildControlFd);
  // A jailed VMM gets its files linked into the jail (PlaceJailFile) instead.
  for (std::size_t i = 0; !jail && i < file_fds.size(); ++i) {
    posix_spawn_file_actions_adddup2(&actions, file_fds[i], kFirstFileFd + static_cast<int>(i));
  }
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own session: a terminal's signals to emberd do not reach the VMs, and VMs outlive
  // an emberd restart. Signal mask and dispositions reset to defaults: emberd blocks
  // SIGTERM/SIGINT and ignores SIGPIPE, and ignored signals would stay ignored across exec.
  sigset_t empty;
  sigemptyset(&empty);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = 0;
  int err = ::posix_spawn(&pid, exec->c_str(), &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  return SpawnReply{err, err == 0 ? pid : 0, 0};
}

// Runs `work` in a forked child of the helper and returns the reply it writes back through a
// pipe, once the child is reaped (EPIPE if it ended without one).
SpawnReply InChild(const std::function<SpawnReply()>& work) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return SpawnReply{errno, 0, 0};
  base::UniqueFd read_end(pipe_fds[0]);
  base::UniqueFd write_end(pipe_fds[1]);
  pid_t child = ::fork();
  if (child < 0) return SpawnReply{errno, 0, 0};
  if (child == 0) {
    const SpawnReply reply = work();
    ssize_t n = ::write(write_end.Get(), &reply, sizeof(reply));
    ::_exit(n == static_cast<ssize_t>(sizeof(reply)) ? 0 : 1);
  }
  write_end.Reset();
  SpawnReply reply{EPIPE, 0, 0};
  ssize_t n;
  do {
    n = ::read(read_end.Get(), &reply, sizeof(reply));
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof(reply))) reply = SpawnReply{EPIPE, 0, 0};
  while (::waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
  }
  return reply;
}

// One spawn, in the helper: a middle process spawns ember-vmm, reports, and exits at once, so
// that ember-vmm is re-parented to the nearest subreaper, emberd. Reaping the middle process
// before replying means the re-parenting is done by the time emberd reads the pid.
SpawnReply SpawnThroughMiddle(const std::string& binary, const std::optional<JailerConfig>& jail,
                              bool pool_slot, const std::string& vm_id, const std::string& netns_path,
                              gid_t vm_gid,
                              const std::vector<JailFile>& files,
                              const std::vector<std::string>& jailer_args,
                              std::vector<std::string> vmm_args, int control_fd, int stderr_fd,
                              const std::vector<int>& file_fds) {
  return InChild([&] {
    SpawnReply reply;
    if (jail) {
      std::string root = pool_slot ? jail->PoolJailRoot(binary, vm_id) : jail->JailRoot(binary, vm_id);
      if (int err = MakeDirs(root); err != 0) reply = SpawnReply{err, 0, kJailDirStep};
      for (std::size_t i = 0; i < files.size() && reply.error == 0; ++i) {
        if (int err = PlaceJailFile(files[i], root, vm_gid); err != 0) {
          reply = SpawnReply{err, 0, static_cast<std::int32_t>(i + 1)};
        }
      }
    }
    // Unjailed, the VMM is spawned inside its clone network: the middle process joins it.
    if (reply.error == 0 && !jail && !netns_path.empty()) {
      base::UniqueFd netns(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!netns || ::setns(netns.Get(), CLONE_NEWNET) != 0) reply = SpawnReply{errno, 0, 0};
    }
    if (reply.error == 0) {
      reply = SpawnVmm(binary, jail, pool_slot, vm_id, netns_path, jailer_args, std::move(vmm_args),
                       control_fd, stderr_fd, file_fds);
    }
    return reply;
  });
}

// One request as it arrived: its bytes split at the NULs, and its fds (the two stdio/control
// fds, then the files emberd checked, each moved above kHeldFileFds).
struct ReceivedRequest {
  std::vector<std::string> args;
  std::vector<base::UniqueFd> fds;
  std::vector<int> file_fds;  // fds[kRequestFds...], as numbers
  bool whole = false;         // nothing truncated, every fd held, at least kRequestFds
};

// Waits for the next request. nullopt once emberd is gone.
std::optional<ReceivedRequest> ReceiveRequest(int socket, std::vector<char>& buffer) {
  while (true) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * (kRequestFds + kMaxLaunchFiles))];
    iovec iov{buffer.data(), buffer.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    ReceivedRequest request;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        request.fds.emplace_back(fd);
      }
    }
    std::vector<base::UniqueFd>& fds = request.fds;
    for (std::size_t i = kRequestFds; i < fds.size(); ++i) {
      // Above every fd SpawnVmm dup2s onto, so that no dup2 overwrites a file still to come.
      base::UniqueFd held(::fcntl(fds[i].Get(), F_DUPFD_CLOEXEC, kHeldFileFds));
      fds[i] = std::move(held);
      request.file_fds.push_back(fds[i].Get());
    }
    const bool files_held = std::all_of(fds.begin(), fds.end(), [](auto& fd) { return bool(fd); });
    request.whole = fds.size() >= kRequestFds && files_held &&
                    (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == 0;
    std::size_t start = 0;
    for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
      if (buffer[i] != '\0') continue;
      request.args.emplace_back(buffer.data() + start, i - start);
      start = i + 1;
    }
    return request;
  }
}

// ember-jailer's ids: letters, digits and dashes, at most 64.
bool IsJailId(const std::string& id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-';
  });
}

// A request's meaning, once every part of it passed the fork server's checks.
struct SpawnRequest {
  RequestKind kind = RequestKind::kVm;
  std::string vm_id;
  std::string netns_path;
  std::vector<JailFile> files;
  std::vector<std::string> jailer_args;
  gid_t vm_gid = 0;
  std::vector<std::string> vmm_args;
};

// Parses `args` (see kRequestTag's comment); nullopt for anything malformed or outside what
// emberd may ask for (a jail id outside ember-jailer's alphabet, an identity outside the range).
std::optional<SpawnRequest> ParseSpawnRequest(std::vector<std::string> args,
                                              const std::vector<int>& file_fds,
                                              const std::optional<JailerConfig>& jail,
                                              const std::string& clone_netns_dir) {
  std::size_t count = 0;
  if (args.size() < 4) return std::nullopt;
  RequestKind kind = RequestKind::kVm;
  if (args[0] == kSlotTag) {
    kind = RequestKind::kSlot;
  } else if (args[0] == kClaimTag) {
    kind = RequestKind::kClaim;
  } else if (args[0] != kRequestTag) {
    return std::nullopt;
  }
  // A slot or a claim is never in a clone network; only a jailed slot is claimed.
  if (kind != RequestKind::kVm && !args[2].empty()) return std::nullopt;
  if (kind == RequestKind::kClaim && !jail) return std::nullopt;
  // A network namespace only from the clone network directory: a file directly in it.
  std::string netns_path = std::move(args[2]);
  args.erase(args.begin() + 2);
  if (!netns_path.empty()) {
    const std::string prefix = clone_netns_dir + "/";
    const std::string name = netns_path.substr(std::min(netns_path.size(), prefix.size()));
    if (clone_netns_dir.empty() || netns_path.rfind(prefix, 0) != 0 || name.empty() ||
        name == "." || name == ".." || name.find('/') != std::string::npos) {
      return std::nullopt;
    }
  }
  {
    auto [end, ec] = std::from_chars(args[2].data(), args[2].data() + args[2].size(), count);
    if (ec != std::errc() || end != args[2].data() + args[2].size() ||
        args.size() < 3 + 2 * count || (!jail && count != 0)) {
      return std::nullopt;
    }
  }
  // A jailed VM's id names its jail directory: ember-jailer's alphabet only, so that no
  // request reaches outside <chroot_base>/<exec name>/.
  if (jail && !IsJailId(args[1])) return std::nullopt;
  SpawnRequest request;
  for (std::size_t i = 0; i < count; ++i) {
    const std::string& kind_name = args[3 + 2 * i];
    std::string host = args[4 + 2 * i];
    std::size_t index = 0;
    if (!host.empty() && host[0] == '#') {
      // One of the request's files: linked from the fd emberd checked, not from a name.
      auto [end, ec] = std::from_chars(host.data() + 1, host.data() + host.size(), index);
      if (ec != std::errc() || end != host.data() + host.size() || index >= file_fds.size()) {
        return std::nullopt;
      }
      host = "/proc/self/fd/" + std::to_string(file_fds[index]);
    }
    if (kind_name.size() < 2 || !IsJailFileName(std::string_view(kind_name).substr(1)) ||
        host.empty() || host[0] != '/' ||
        std::string_view("clLs").find(kind_name[0]) == std::string::npos) {
      return std::nullopt;
    }
    request.files.push_back(
        JailFile{static_cast<JailFile::How>(kind_name[0]), host, kind_name.substr(1)});
  }
  const std::size_t options_at = 3 + 2 * count;
  std::size_t option_pairs = 0;
  if (args.size() <= options_at) return std::nullopt;
  {
    const std::string& text = args[options_at];
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), option_pairs);
    if (ec != std::errc() || end != text.data() + text.size() ||
        args.size() < options_at + 1 + 2 * option_pairs || (!jail && option_pairs != 0)) {
      return std::nullopt;
    }
  }
  for (std::size_t i = 0; i < option_pairs; ++i) {
    request.jailer_args.push_back(args[options_at + 1 + 2 * i]);
    request.jailer_args.push_back(args[options_at + 2 + 2 * i]);
  }
  if (jail) {
    std::optional<gid_t> vm_gid = CheckJailerOptions(jail->ids, jail->cgroups, request.jailer_args);
    if (!vm_gid) return std::nullopt;
    request.vm_gid = *vm_gid;
  }
  request.kind = kind;
  request.vm_id = args[1];
  request.netns_path = std::move(netns_path);
  args.erase(args.begin(),
             args.begin() + static_cast<std::ptrdiff_t>(options_at + 1 + 2 * option_pairs));
  request.vmm_args = std::move(args);
  // A slot runs nothing but --pool-slot and is given nothing yet; a claim names its slot (a
  // jail id as well).
  if (kind == RequestKind::kSlot &&
      (request.vmm_args != std::vector<std::string>{"--pool-slot"} || !request.files.empty())) {
    return std::nullopt;
  }
  if (kind == RequestKind::kClaim &&
      (request.vmm_args.size() != 1 || !IsJailId(request.vmm_args[0]))) {
    return std::nullopt;
  }
  return request;
}

// The pid of the process `pidfd` refers to (its fdinfo's "Pid:"); 0 or less once it ended.
pid_t PidOfPidfd(int pidfd) {
  absl::StatusOr<std::string> info = ReadFile("/proc/self/fdinfo/" + std::to_string(pidfd));
  const std::size_t at = info.ok() ? info->find("\nPid:") : std::string::npos;
  if (at == std::string::npos) return 0;
  return static_cast<pid_t>(std::strtol(info->c_str() + at + 5, nullptr, 10));
}

// `pid` and its children (a jailed slot's stand-in and its ember-vmm).
std::vector<pid_t> WithChildren(pid_t pid) {
  std::vector<pid_t> pids = {pid};
  const std::string path =
      "/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children";
  absl::StatusOr<std::string> text = ReadFile(path);
  const char* at = text.ok() ? text->c_str() : "";
  for (char* end = nullptr;; at = end) {
    const long child = std::strtol(at, &end, 10);
    if (end == at) break;
    pids.push_back(static_cast<pid_t>(child));
  }
  return pids;
}

// Makes the running pool slot request.vmm_args[0] (jailed, idle: it has run nothing of a VM)
// VM request.vm_id's jail, doing what ember-jailer does for the VM alone: its jail directory
// renamed to the VM's (never over another), the VM's files put in as for a spawn, its device
// nodes beyond KVM, its cgroup (made with the VM's limits; the slot's processes
// moved in and the slot's own removed) and its taps, made in the slot's network namespace.
// `pidfd`: the slot's process, checked to be chrooted into that slot's jail. Runs in a child of
// the fork server, which it leaves in the slot's network namespace.
SpawnReply ClaimSlotJail(const std::string& binary, const JailerConfig& jail,
                         const SpawnRequest& request, int pidfd) {
  const std::string& slot = request.vmm_args[0];
  const std::string slot_root = jail.PoolJailRoot(binary, slot);
  const std::string root = jail.JailRoot(binary, request.vm_id);
  const pid_t pid = PidOfPidfd(pidfd);
  struct stat seen {};
  struct stat want {};
  if (pid <= 0 || ::stat(("/proc/" + std::to_string(pid) + "/root").c_str(), &seen) != 0 ||
      ::stat(slot_root.c_str(), &want) != 0 || seen.st_dev != want.st_dev ||
      seen.st_ino != want.st_ino) {
    return SpawnReply{pid <= 0 ? ESRCH : EPERM, 0, kClaimSlotStep};
  }
  const std::string slot_dir = std::filesystem::path(slot_root).parent_path().string();
  const std::string vm_dir = std::filesystem::path(root).parent_path().string();
  if (int err = MakeDirs(std::filesystem::path(vm_dir).parent_path().string()); err != 0) {
    return SpawnReply{err, 0, kJailDirStep};
  }
  if (::renameat2(AT_FDCWD, slot_dir.c_str(), AT_FDCWD, vm_dir.c_str(), RENAME_NOREPLACE) != 0) {
    return SpawnReply{errno, 0, kJailDirStep};
  }
  for (std::size_t i = 0; i < request.files.size(); ++i) {
    if (int err = PlaceJailFile(request.files[i], root, request.vm_gid); err != 0) {
      return SpawnReply{err, 0, static_cast<std::int32_t>(i + 1)};
    }
  }
  // The options as ember-jailer would take them (ParseSpawnRequest checked them already).
  std::vector<std::string> argv = {"--id", request.vm_id, "--exec-file", binary, "--isolate"};
  argv.insert(argv.end(), request.jailer_args.begin(), request.jailer_args.end());
  if (std::find(argv.begin(), argv.end(), "--cgroup") != argv.end()) {
    argv.insert(argv.end(), {"--cgroup-version", std::to_string(jail.cgroups.version),
                             "--parent-cgroup", jail.cgroups.parent});
  }
  absl::StatusOr<jailer::JailerArgs> args = jailer::ParseJailerArgs(argv);
  if (!args.ok()) return SpawnReply{EINVAL, 0, kClaimLimitsStep};
  std::vector<std::string> devices = args->devices.value_or(std::vector<std::string>{});
  std::erase(devices, "kvm");  // the slot has it: it opened /dev/kvm to prepare
  if (!jailer::AddDeviceNodes(root, devices, args->uid, args->gid).ok()) {
    return SpawnReply{errno != 0 ? errno : EIO, 0, kClaimDevicesStep};
  }
  // Its file size bound the slot sets on itself at its launch (VmmPool): raising another
  // uid's rlimits needs CAP_SYS_RESOURCE, which root in a container may lack.
  const std::vector<pid_t> pids = WithChildren(pid);
  if (!args->cgroups.empty()) {
    for (pid_t target : pids) {
      if (!jailer::SetUpCgroups(*args, target).ok()) return SpawnReply{EIO, 0, kClaimCgroupStep};
    }
    // Empty now; the kernel may take a moment to let it go. A leftover is removed with the
    // pool's others (VmmPool).
    for (const std::string& mount : jail.cgroups.mounts) {
      const std::string dir =
          mount + "/" + jail.cgroups.parent + "/" + kPoolJailDir + "/" + slot;
      for (int tries = 0; ::rmdir(dir.c_str()) != 0 && errno == EBUSY && tries < 100; ++tries) {
        ::usleep(1000);
      }
    }
  }
  if (!args->taps.empty()) {
    if (::setns(pidfd, CLONE_NEWNET) != 0) return SpawnReply{errno, 0, kClaimTapStep};
    for (const std::string& tap : args->taps) {
      if (!jailer::CreateOwnedTap(tap, args->uid, args->gid).ok()) {
        return SpawnReply{errno != 0 ? errno : EIO, 0, kClaimTapStep};
      }
    }
  }
  return SpawnReply{0, pid, 0};
}

// A claim, in a child of the helper (which must stay in its own network namespace).
SpawnReply ClaimThroughChild(const std::string& binary, const JailerConfig& jail,
                             const SpawnRequest& request, int pidfd) {
  return InChild([&] { return ClaimSlotJail(binary, jail, request, pidfd); });
}

// The helper's loop: one request, one spawn, one reply, until emberd closes its end.
[[noreturn]] void ServeSpawns(base::UniqueFd socket, const std::string& binary,
                              const std::optional<JailerConfig>& jail,
                              const std::string& clone_netns_dir) {
  EMBER_LOG(kDebug) << "emberd: fork server for " << binary << " is pid " << ::getpid();
  std::vector<char> buffer(kMaxRequest);
  while (true) {
    std::optional<ReceivedRequest> received = ReceiveRequest(socket.Get(), buffer);
    if (!received) ::_exit(0);  // emberd is gone
    SpawnReply reply{kMalformed, 0, 0};
    std::optional<SpawnRequest> request;
    if (received->whole) {
      request = ParseSpawnRequest(std::move(received->args), received->file_fds, jail,
                                  clone_netns_dir);
    }
    if (request && request->kind == RequestKind::kClaim) {
      reply = ClaimThroughChild(binary, *jail, *request, received->fds[0].Get());
    } else if (request) {
      reply = SpawnThroughMiddle(binary, jail, request->kind == RequestKind::kSlot,
                                 request->vm_id, request->netns_path,
                                 request->vm_gid, request->files,
                                 request->jailer_args, std::move(request->vmm_args),
                                 received->fds[0].Get(), received->fds[1].Get(),
                                 received->file_fds);
    }
    received.reset();
    if (::send(socket.Get(), &reply, sizeof(reply), MSG_NOSIGNAL) != sizeof(reply)) ::_exit(0);
  }
}

std::size_t ThreadCount() {
  std::error_code error;
  std::size_t count = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/task", error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    ++count;
  }
  return count;
}

}  // namespace

bool IsJailFileName(std::string_view name) {
  const std::string out_prefix = std::string(kJailOutputDir) + "/";
  if (name.starts_with(out_prefix)) name.remove_prefix(out_prefix.size());
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos;
}

std::string JailerConfig::JailRoot(const std::string& vmm_binary, const std::string& id) const {
  return chroot_base + "/" + Basename(vmm_binary) + "/" + id + "/root";
}

std::string JailerConfig::PoolJailRoot(const std::string& vmm_binary,
                                       const std::string& slot) const {
  return chroot_base + "/" + kPoolJailDir + "/" + Basename(vmm_binary) + "/" + slot + "/root";
}

absl::StatusOr<std::unique_ptr<ForkServerLauncher>> ForkServerLauncher::Start(
    std::string binary, std::optional<JailerConfig> jailer, std::string clone_netns_dir) {
  if (std::size_t threads = ThreadCount(); threads != 1) {
    return absl::FailedPreconditionError(
        "the fork server must start while emberd has one thread; it has " +
        std::to_string(threads));
  }
  // ember-vmm's middle parent exits at once; the orphan goes to the nearest subreaper.
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    return base::ErrnoError("prctl(PR_SET_CHILD_SUBREAPER)");
  }
  // Whatever emberd's own parent left open without close-on-exec (a service manager's or a
  // shell's fds) must not reach a VMM, jailed or not: the helper holds none of it, and every
  // VMM gets only stdio, its control socket and its files.
  EMBER_ASSIGN_OR_RETURN(base::HelperProcess helper,
                         base::ForkHelperProcess("fork server", nullptr,
                                                 [&](base::UniqueFd socket) {
                                                   ServeSpawns(std::move(socket), binary, jailer,
                                                               clone_netns_dir);
                                                 }));
  return std::unique_ptr<ForkServerLauncher>(
      new ForkServerLauncher(std::move(binary), std::move(helper.socket), helper.pid));
}

absl::StatusOr<pid_t> ForkServerLauncher::Launch(const LaunchSpec& spec) {
  if (spec.pool_slot) {
    return Request(kSlotTag, sizeof(kSlotTag), spec, spec.vmm_args,
                   {spec.control_listen_fd, spec.stderr_fd});
  }
  return Request(kRequestTag, sizeof(kRequestTag), spec, spec.vmm_args,
                 {spec.control_listen_fd, spec.stderr_fd});
}

absl::Status ForkServerLauncher::ClaimSlot(const std::string& slot, int slot_pidfd,
                                           const LaunchSpec& spec) {
  absl::StatusOr<pid_t> claimed =
      Request(kClaimTag, sizeof(kClaimTag), spec, {slot}, {slot_pidfd, slot_pidfd});
  return claimed.status();
}

absl::StatusOr<pid_t> ForkServerLauncher::Request(const char* tag, std::size_t tag_size,
                                                  const LaunchSpec& spec,
                                                  const std::vector<std::string>& tail,
                                                  std::vector<int> fds) {
  std::string request(tag, tag_size);  // with its NUL
  std::vector<std::string> fields = {spec.vm_id, spec.netns_path,
                                     std::to_string(spec.jail_files.size())};
  for (const JailFile& file : spec.jail_files) {
    fields.push_back(static_cast<char>(file.how) + file.jail_name);
    if (file.file >= 0 && static_cast<std::size_t>(file.file) >= spec.files.size()) {
      return absl::InternalError("VM \"" + spec.vm_id + "\": jail file " + file.jail_name +
                                 " names no file of the launch");
    }
    fields.push_back(file.file >= 0 ? "#" + std::to_string(file.file) : file.host_path);
  }
  if (spec.jailer_args.size() % 2 != 0) {
    return absl::InternalError("VM \"" + spec.vm_id + "\": jailer options come in pairs");
  }
  fields.push_back(std::to_string(spec.jailer_args.size() / 2));
  fields.insert(fields.end(), spec.jailer_args.begin(), spec.jailer_args.end());
  fields.insert(fields.end(), tail.begin(), tail.end());
  for (const std::string& arg : fields) {
    if (arg.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError("VM \"" + spec.vm_id +
                                        "\": an ember-vmm argument contains a NUL byte");
    }
    request += arg;
    request += '\0';
  }
  if (request.size() > kMaxRequest) {
    return absl::InvalidArgumentError("VM \"" + spec.vm_id + "\": ember-vmm's arguments are " +
                                      std::to_string(request.size()) + " bytes, more than " +
                                      std::to_string(kMaxRequest));
  }
  if (spec.files.size() > kMaxLaunchFiles) {
    return absl::InvalidArgumentError("VM \"" + spec.vm_id + "\": more than " +
                                      std::to_string(kMaxLaunchFiles) + " files to hand over");
  }
  for (const base::UniqueFd& file : spec.files) fds.push_back(file.Get());
  const std::size_t fd_bytes = sizeof(int) * fds.size();
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * (kRequestFds + kMaxLaunchFiles))] = {};
  iovec iov{request.data(), request.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(fd_bytes);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(fd_bytes);
  std::memcpy(CMSG_DATA(c), fds.data(), fd_bytes);

  std::lock_guard lock(mu_);
  ssize_t sent;
  do {
    sent = ::sendmsg(socket_.Get(), &msg, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent != static_cast<ssize_t>(request.size())) {
    return base::ErrnoError(
        "sendmsg", "emberd's fork server (pid " + std::to_string(helper_pid_) + ") for " + binary_);
  }
  SpawnReply reply;
  ssize_t got;
  do {
    got = ::recv(socket_.Get(), &reply, sizeof(reply), 0);
  } while (got < 0 && errno == EINTR);
  if (got != static_cast<ssize_t>(sizeof(reply))) {
    return absl::UnavailableError("emberd's fork server (pid " + std::to_string(helper_pid_) +
                                  ") did not answer a spawn of " + binary_ +
                                  (got < 0 ? std::string(": ") + std::strerror(errno) : ""));
  }
  if (reply.error == kMalformed) {
    return absl::InternalError("emberd's fork server refused a malformed spawn request");
  }
  if (reply.error != 0 && reply.jail_step == kJailDirStep && tag == kClaimTag &&
      (reply.error == EEXIST || reply.error == ENOTEMPTY)) {
    return absl::AlreadyExistsError("VM \"" + spec.vm_id + "\" has a jail already");
  }
  if (reply.error != 0 && reply.jail_step == kJailDirStep) {
    return base::ErrnoError(reply.error, tag == kClaimTag ? "rename" : "mkdir",
                            "VM \"" + spec.vm_id + "\"'s jail");
  }
  if (reply.error != 0 && reply.jail_step > kJailDirStep) {
    static constexpr const char* kSteps[] = {"the pool slot's process", "its device nodes",
                                             "its options", "its cgroup", "its taps"};
    const auto step = static_cast<std::size_t>(reply.jail_step - kJailDirStep - 1);
    return base::ErrnoError(reply.error,
                            std::string("claiming a pool slot: ") +
                                (step < std::size(kSteps) ? kSteps[step] : "a step"),
                            "VM \"" + spec.vm_id + "\"");
  }
  if (reply.error != 0 && reply.jail_step > 0 &&
      static_cast<std::size_t>(reply.jail_step) <= spec.jail_files.size()) {
    const JailFile& file = spec.jail_files[static_cast<std::size_t>(reply.jail_step - 1)];
    if (file.how == JailFile::How::kLink && reply.error == EXDEV) {
      return absl::FailedPreconditionError(
          "VM \"" + spec.vm_id + "\": " + file.host_path +
          " is on another filesystem than the jail (--chroot-base); a jailed VM's drives are "
          "hard-linked into its jail, never copied");
    }
    return base::ErrnoError(reply.error, "putting " + file.host_path + " into the jail",
                            "VM \"" + spec.vm_id + "\"");
  }
  if (reply.error != 0) return base::ErrnoError(reply.error, "posix_spawn", binary_);
  return static_cast<pid_t>(reply.pid);
}

}  // namespace ember::emberd
