#include "jailer/jail.h"

#include <elf.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "jailer/cgroup.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::jailer {
namespace {

using base::ErrnoError;
using base::UniqueFd;

// A device node the jail gets, owned by the target uid/gid. The numbers are taken from the
// host's node when it has one; kvm and tun have fixed misc minors, userfaultfd's is dynamic.
struct DeviceNode {
  const char* name;  // as --device names it
  const char* path;
  unsigned fallback_major;
  unsigned fallback_minor;
  bool fixed_number;  // false: skip the node when the host has none.
};
constexpr DeviceNode kDeviceNodes[] = {
    {"kvm", "/dev/kvm", 10, 232, true},
    {"tun", "/dev/net/tun", 10, 200, true},
    {"userfaultfd", "/dev/userfaultfd", 0, 0, false},
};

// Signals the foreground parent (--new-pid-ns without --daemonize) forwards to its child.
constexpr int kForwardedSignals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
std::atomic<pid_t> g_child_pid{0};

void ForwardSignal(int sig) {
  pid_t child = g_child_pid.load();
  if (child > 0) ::kill(child, sig);
}

sigset_t ForwardedSignalSet() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : kForwardedSignals) sigaddset(&set, sig);
  return set;
}

// Installed before the fork (with the signals blocked) so that a signal sent to the jailer
// at any moment reaches the child, and none kills the parent behind the child's back.
void PrepareForwarding() {
  sigset_t forwarded = ForwardedSignalSet();
  ::sigprocmask(SIG_BLOCK, &forwarded, nullptr);
  struct sigaction action {};
  action.sa_handler = ForwardSignal;
  sigemptyset(&action.sa_mask);
  for (int sig : kForwardedSignals) ::sigaction(sig, &action, nullptr);
}

absl::Status MakeDirs(const std::string& path) {
  std::string prefix;
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoError("mkdir", prefix);
    }
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoError("stat", path);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a directory"));
  }
  return absl::OkStatus();
}

absl::Status RemoveIfPresent(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoError("unlink", path);
  return absl::OkStatus();
}

absl::Status CloseInheritedFds(std::optional<int> keep) {
  // close_range() leaves nothing behind, however many fds the caller leaked to us.
  unsigned first = 3;
  if (keep) {
    if (*keep > 3 && ::close_range(3, static_cast<unsigned>(*keep) - 1, 0) != 0) {
      return ErrnoError("close_range");
    }
    first = static_cast<unsigned>(*keep) + 1;
    int flags = ::fcntl(*keep, F_GETFD);
    if (flags < 0 || ::fcntl(*keep, F_SETFD, flags & ~FD_CLOEXEC) != 0) {
      return ErrnoError("fcntl(F_SETFD)", absl::StrCat("passed fd ", *keep));
    }
  }
  if (::close_range(first, ~0U, 0) != 0) return ErrnoError("close_range");
  return absl::OkStatus();
}

// A caller may have ignored or blocked signals; the VMM must start from the defaults.
void ResetSignals() {
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    ::signal(sig, SIG_DFL);  // fails harmlessly for the signal numbers glibc reserves.
  }
}

// The jail holds no shared libraries, so a dynamically linked binary cannot start there.
void WarnIfDynamic(int fd, const std::string& path) {
  Elf64_Ehdr ehdr{};
  if (::pread(fd, &ehdr, sizeof(ehdr), 0) != static_cast<ssize_t>(sizeof(ehdr))) return;
  if (std::memcmp(ehdr.e_ident, ELFMAG, SELFMAG) != 0 || ehdr.e_ident[EI_CLASS] != ELFCLASS64) {
    return;
  }
  for (unsigned i = 0; i < ehdr.e_phnum; ++i) {
    Elf64_Phdr phdr{};
    off_t at = static_cast<off_t>(ehdr.e_phoff + i * sizeof(Elf64_Phdr));
    if (::pread(fd, &phdr, sizeof(phdr), at) != static_cast<ssize_t>(sizeof(phdr))) return;
    if (phdr.p_type == PT_INTERP) {
      EMBER_LOG(kWarn) << path << " is dynamically linked; unless its loader and libraries "
                       << "were put in the jail, exec will fail with ENOENT";
      return;
    }
  }
}

// A hard link is cheap, but shares the inode: only safe when the jailed uid can never write it.
bool CanHardLink(const struct stat& st) { return st.st_uid == 0 && (st.st_mode & 022) == 0; }

absl::Status CopyFile(int src, const std::string& dst, off_t size) {
  EMBER_RETURN_IF_ERROR(RemoveIfPresent(dst));
  UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0755));
  if (!out) return ErrnoError("create", dst);
  off_t offset = 0;
  while (offset < size) {
    ssize_t n = ::sendfile(out.Get(), src, &offset, static_cast<size_t>(size - offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("sendfile", dst);
    if (n == 0) return absl::DataLossError(absl::StrCat("exec file shrank while copying ", dst));
  }
  if (::fchmod(out.Get(), 0755) != 0) return ErrnoError("fchmod", dst);
  return absl::OkStatus();
}

// Binaries the VMM runs from beside its own executable; the jail gets them with it: ember-config
// reads --config's JSON, ember-fc-api serves --api-sock (Firecracker's REST API).
constexpr const char* kCompanionBinaries[] = {"ember-config", "ember-fc-api"};

// A binary to place in the jail: opened (and checked) before the jail exists, hard-linked in
// before pivot_root when that is safe, otherwise copied in after it.
struct JailedBinary {
  std::string name;  // its name in the jail's root
  UniqueFd fd;
  struct stat info {};
  bool linked = false;
};

absl::StatusOr<JailedBinary> OpenBinary(const std::string& path, const std::string& name) {
  JailedBinary binary{name, UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC))};
  if (!binary.fd) return ErrnoError("open", path);
  if (::fstat(binary.fd.Get(), &binary.info) != 0) return ErrnoError("fstat", path);
  WarnIfDynamic(binary.fd.Get(), path);
  return binary;
}

absl::Status LinkIntoJail(const std::string& chroot_dir, JailedBinary* binary) {
  if (!CanHardLink(binary->info)) return absl::OkStatus();
  const std::string jailed = chroot_dir + "/" + binary->name;
  EMBER_RETURN_IF_ERROR(RemoveIfPresent(jailed));
  // AT_EMPTY_PATH links exactly the inode checked above, not whatever the path names now.
  binary->linked =
      ::linkat(binary->fd.Get(), "", AT_FDCWD, jailed.c_str(), AT_EMPTY_PATH) == 0;
  return absl::OkStatus();
}

absl::Status SetLimit(int resource, const char* name, uint64_t value) {
  struct rlimit limit {
    value, value
  };
  if (::setrlimit(resource, &limit) != 0) return ErrnoError("setrlimit", name);
  return absl::OkStatus();
}

// New ipc, uts and network namespaces (or, with --netns, the one joined already), and in the
// network one the taps the VMM will attach to: persistent and owned by uid:gid, so that the
// VMM needs no CAP_NET_ADMIN to open them. A tap the joined namespace has already is taken
// over (TUNSETIFF attaches to it) and given to uid:gid the same way. They go with the
// namespace when its last holder is gone.
absl::Status Isolate(const JailerArgs& args) {
  const int network = args.netns ? 0 : CLONE_NEWNET;
  if (::unshare(CLONE_NEWIPC | CLONE_NEWUTS | network) != 0) {
    return ErrnoError(args.netns ? "unshare(CLONE_NEWIPC|CLONE_NEWUTS)"
                                 : "unshare(CLONE_NEWIPC|CLONE_NEWUTS|CLONE_NEWNET)");
  }
  for (const std::string& name : args.taps) {
    EMBER_RETURN_IF_ERROR(CreateOwnedTap(name, args.uid, args.gid));
  }
  return absl::OkStatus();
}

absl::Status JoinNetns(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoError("open network namespace", path);
  if (::setns(fd.Get(), CLONE_NEWNET) != 0) return ErrnoError("setns(CLONE_NEWNET)", path);
  return absl::OkStatus();
}

// New mount namespace whose root is `chroot_dir`; the host's tree is detached, not merely
// hidden, so no path, fd-less trick or '..' leads back out.
absl::Status PivotInto(const std::string& chroot_dir) {
  if (::unshare(CLONE_NEWNS) != 0) return ErrnoError("unshare(CLONE_NEWNS)");
  // Nothing done in here may propagate back to the host's mounts.
  if (::mount(nullptr, "/", nullptr, MS_SLAVE | MS_REC, nullptr) != 0) {
    return ErrnoError("mount(MS_SLAVE|MS_REC)", "/");
  }
  // pivot_root needs the new root to be a mount point.
  if (::mount(chroot_dir.c_str(), chroot_dir.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return ErrnoError("bind mount", chroot_dir);
  }
  if (::chdir(chroot_dir.c_str()) != 0) return ErrnoError("chdir", chroot_dir);
  // pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then
  // removes it without needing a directory for it inside the jail.
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return ErrnoError("pivot_root", chroot_dir);
  if (::umount2(".", MNT_DETACH) != 0) return ErrnoError("umount2(old root)");
  if (::chdir("/") != 0) return ErrnoError("chdir", "/");
  return absl::OkStatus();
}

struct HostDevice {
  const char* path;
  dev_t rdev;
};

// The nodes --device asks for (every one when it is not given).
std::vector<HostDevice> LookUpHostDevices(const std::optional<std::vector<std::string>>& wanted) {
  std::vector<HostDevice> devices;
  for (const DeviceNode& node : kDeviceNodes) {
    if (wanted && std::find(wanted->begin(), wanted->end(), node.name) == wanted->end()) {
      continue;
    }
    struct stat st {};
    if (::stat(node.path, &st) == 0 && S_ISCHR(st.st_mode)) {
      devices.push_back({node.path, st.st_rdev});
    } else if (node.fixed_number) {
      devices.push_back({node.path, ::makedev(node.fallback_major, node.fallback_minor)});
    } else {
      EMBER_LOG(kWarn) << "host has no " << node.path << "; the jail will not have one either";
    }
  }
  return devices;
}

// Runs inside the jail, so a symlink planted by an earlier tenant of the same chroot can only
// point within it.
absl::Status MakeDirInJail(const char* dir) {
  if (::mkdir(dir, 0755) != 0 && errno != EEXIST) return ErrnoError("mkdir", dir);
  struct stat st {};
  if (::lstat(dir, &st) != 0) return ErrnoError("lstat", dir);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(dir, " in the jail is not a directory"));
  }
  return absl::OkStatus();
}

absl::Status CreateDeviceNodes(const std::vector<HostDevice>& devices, uid_t uid, gid_t gid) {
  EMBER_RETURN_IF_ERROR(MakeDirInJail("/dev"));
  EMBER_RETURN_IF_ERROR(MakeDirInJail("/dev/net"));
  for (const HostDevice& device : devices) {
    EMBER_RETURN_IF_ERROR(RemoveIfPresent(device.path));
    if (::mknod(device.path, S_IFCHR | 0600, device.rdev) != 0) {
      return ErrnoError("mknod", device.path);
    }
    if (::fchownat(AT_FDCWD, device.path, uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoError("chown", device.path);
    }
  }
  return absl::OkStatus();
}

// The jail's root and everything put there stay root's, so the VMM can replace none of it
// (a console turned into a symlink, a binary swapped); what it writes goes into kOutputDir,
// the one directory it owns. A root a previous jailer version gave to the uid is taken back.
absl::Status SecureRootAndMakeOutputDir(uid_t uid, gid_t gid) {
  if (::chown("/", 0, 0) != 0) return ErrnoError("chown", "jail root");
  if (::chmod("/", 0755) != 0) return ErrnoError("chmod", "jail root");
  const std::string out = std::string("/") + kOutputDir;
  EMBER_RETURN_IF_ERROR(MakeDirInJail(out.c_str()));
  if (::fchownat(AT_FDCWD, out.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoError("chown", out);
  }
  if (::chmod(out.c_str(), 0700) != 0) return ErrnoError("chmod", out);
  return absl::OkStatus();
}

absl::Status WritePidFile(const std::string& path, pid_t pid) {
  EMBER_RETURN_IF_ERROR(RemoveIfPresent(path));
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd) return ErrnoError("create", path);
  std::string text = absl::StrCat(pid, "\n");
  if (::write(fd.Get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return ErrnoError("write", path);
  }
  return absl::OkStatus();
}

// The last step in the process that becomes the VMM. Returns only on failure.
absl::Status EnterVmm(const JailerArgs& args, int dev_null) {
  if (args.daemonize) {
    if (::setsid() < 0) return ErrnoError("setsid");
    for (int fd = 0; fd < 3; ++fd) {
      if (::dup2(dev_null, fd) < 0) return ErrnoError("dup2", "/dev/null");
    }
  }
  EMBER_RETURN_IF_ERROR(DropPrivileges(args.uid, args.gid, args.supplementary_gid));
  // Under a foreground stand-in (--new-pid-ns) the VMM must not outlive it: whoever supervises
  // the stand-in's pid (emberd) kills that pid. Set after the uid change, which clears it.
  if (args.new_pid_ns && !args.daemonize && ::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
    return ErrnoError("prctl(PR_SET_PDEATHSIG)");
  }
  std::string path = "/" + args.ExecName();
  std::vector<std::string> argv_store = {args.ExecName()};
  argv_store.insert(argv_store.end(), args.vmm_args.begin(), args.vmm_args.end());
  std::vector<char*> argv;
  for (auto& arg : argv_store) argv.push_back(arg.data());
  argv.push_back(nullptr);
  char* envp[] = {nullptr};
  ::execve(path.c_str(), argv.data(), envp);
  return ErrnoError("execve", path);
}

// Parent side after fork: reports the child's pid, then learns from the close-on-exec
// status pipe whether the child reached execve.
absl::StatusOr<int> SuperviseChild(const JailerArgs& args, pid_t child, UniqueFd status_read) {
  g_child_pid.store(child);
  // Signals that arrived since the fork were held back until the child's pid was known.
  sigset_t forwarded = ForwardedSignalSet();
  ::sigprocmask(SIG_UNBLOCK, &forwarded, nullptr);
  absl::Status pid_status = WritePidFile("/" + args.ExecName() + ".pid", child);
  std::string failure;
  char buf[512];
  for (;;) {
    ssize_t n = ::read(status_read.Get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    failure.append(buf, static_cast<size_t>(n));
  }
  if (!failure.empty()) {
    ::waitpid(child, nullptr, 0);
    return absl::InternalError(failure);
  }
  if (!pid_status.ok()) {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    return pid_status;
  }
  EMBER_LOG(kInfo) << "started /" << args.ExecName() << " as pid " << child << " in "
                   << args.ChrootDir();
  if (args.daemonize) return 0;

  // Foreground --new-pid-ns: stay as a thin, unprivileged stand-in for the child.
  EMBER_RETURN_IF_ERROR(DropPrivileges(args.uid, args.gid));
  int wstatus = 0;
  while (::waitpid(child, &wstatus, 0) < 0) {
    if (errno != EINTR) return ErrnoError("waitpid");
  }
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  return 128 + WTERMSIG(wstatus);
}

}  // namespace

absl::Status CheckPassFd(const JailerArgs& args) {
  if (args.pass_fd && ::fcntl(*args.pass_fd, F_GETFD) < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--pass-fd: ", *args.pass_fd, " is not an open file descriptor"));
  }
  return absl::OkStatus();
}

absl::Status DropPrivileges(uid_t uid, gid_t gid, std::optional<gid_t> supplementary) {
  if (::setgroups(supplementary ? 1 : 0, supplementary ? &*supplementary : nullptr) != 0) {
    return ErrnoError("setgroups");
  }
  if (::setresgid(gid, gid, gid) != 0) return ErrnoError("setresgid", std::to_string(gid));
  // Emptying the bounding set needs CAP_SETPCAP, so it comes before the uid change.
  for (int cap = 0; ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
      return ErrnoError("prctl(PR_CAPBSET_DROP)", std::to_string(cap));
    }
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
    return ErrnoError("prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
  }
  // No exec may grant privileges again (setuid bits, file capabilities).
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return ErrnoError("prctl(NO_NEW_PRIVS)");
  if (::setresuid(uid, uid, uid) != 0) return ErrnoError("setresuid", std::to_string(uid));
  // Leaving uid 0 already cleared the rest; for --allow-root it is done explicitly.
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capset, &header, data) != 0) return ErrnoError("capset");

  if (::syscall(SYS_capget, &header, data) != 0) return ErrnoError("capget");
  for (const auto& d : data) {
    if (d.effective != 0 || d.permitted != 0 || d.inheritable != 0) {
      return absl::InternalError("capabilities are still held after dropping them");
    }
  }
  uid_t ruid, euid, suid;
  gid_t rgid, egid, sgid;
  if (::getresuid(&ruid, &euid, &suid) != 0 || ::getresgid(&rgid, &egid, &sgid) != 0 ||
      ruid != uid || euid != uid || suid != uid || rgid != gid || egid != gid || sgid != gid) {
    return absl::InternalError("uid/gid did not change as asked");
  }
  if (uid != 0 && ::setuid(0) == 0) return absl::InternalError("could regain uid 0");
  return absl::OkStatus();
}

absl::Status CreateOwnedTap(const std::string& name, uid_t uid, gid_t gid) {
  UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!tun) return ErrnoError("open", "/dev/net/tun");
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), std::min(name.size(), sizeof(ifr.ifr_name) - 1));
  // The flags ember-vmm opens a tap with (virtio/net/tap.cc): a persistent tap must match.
  ifr.ifr_flags = static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
  if (::ioctl(tun.Get(), TUNSETIFF, &ifr) != 0) return ErrnoError("TUNSETIFF", name);
  if (::ioctl(tun.Get(), TUNSETOWNER, static_cast<unsigned long>(uid)) != 0) {
    return ErrnoError("TUNSETOWNER", name);
  }
  if (::ioctl(tun.Get(), TUNSETGROUP, static_cast<unsigned long>(gid)) != 0) {
    return ErrnoError("TUNSETGROUP", name);
  }
  if (::ioctl(tun.Get(), TUNSETPERSIST, 1UL) != 0) return ErrnoError("TUNSETPERSIST", name);
  return absl::OkStatus();
}

absl::Status AddDeviceNodes(const std::string& root, const std::vector<std::string>& names,
                            uid_t uid, gid_t gid) {
  for (const HostDevice& device : LookUpHostDevices(names)) {
    const std::string path = root + device.path;
    EMBER_RETURN_IF_ERROR(RemoveIfPresent(path));
    if (::mknod(path.c_str(), S_IFCHR | 0600, device.rdev) != 0) return ErrnoError("mknod", path);
    if (::fchownat(AT_FDCWD, path.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoError("chown", path);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> RunJailer(const JailerArgs& args) {
  ResetSignals();
  EMBER_RETURN_IF_ERROR(CloseInheritedFds(args.pass_fd));
  if (::clearenv() != 0) return absl::InternalError("clearenv failed");
  ::umask(022);

  // The exec file, and the tools it runs from beside itself (ember-vmm reads --config's JSON
  // through ember-config), when they are there.
  std::vector<JailedBinary> binaries;
  EMBER_ASSIGN_OR_RETURN(JailedBinary exec, OpenBinary(args.exec_file, args.ExecName()));
  binaries.push_back(std::move(exec));
  std::string exec_dir = args.exec_file.substr(0, args.exec_file.rfind('/') + 1);
  for (const char* companion : kCompanionBinaries) {
    if (::access((exec_dir + companion).c_str(), F_OK) != 0) continue;
    EMBER_ASSIGN_OR_RETURN(JailedBinary binary, OpenBinary(exec_dir + companion, companion));
    binaries.push_back(std::move(binary));
  }

  const std::string chroot_dir = args.ChrootDir();
  EMBER_RETURN_IF_ERROR(MakeDirs(chroot_dir));
  for (JailedBinary& binary : binaries) {
    EMBER_RETURN_IF_ERROR(LinkIntoJail(chroot_dir, &binary));
  }

  EMBER_RETURN_IF_ERROR(SetUpCgroups(args, ::getpid()).status());
  if (args.fsize_limit) {
    EMBER_RETURN_IF_ERROR(SetLimit(RLIMIT_FSIZE, "RLIMIT_FSIZE", *args.fsize_limit));
  }
  EMBER_RETURN_IF_ERROR(SetLimit(RLIMIT_NOFILE, "RLIMIT_NOFILE", args.no_file_limit));
  if (args.nproc_limit) {
    EMBER_RETURN_IF_ERROR(SetLimit(RLIMIT_NPROC, "RLIMIT_NPROC", *args.nproc_limit));
  }
  if (args.netns) EMBER_RETURN_IF_ERROR(JoinNetns(*args.netns));
  if (args.isolate) EMBER_RETURN_IF_ERROR(Isolate(args));

  UniqueFd dev_null;
  if (args.daemonize) {
    dev_null.Reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!dev_null) return ErrnoError("open", "/dev/null");
  }
  std::vector<HostDevice> devices = LookUpHostDevices(args.devices);

  EMBER_RETURN_IF_ERROR(PivotInto(chroot_dir));
  // From here on every path is inside the jail.
  EMBER_RETURN_IF_ERROR(CreateDeviceNodes(devices, args.uid, args.gid));
  for (JailedBinary& binary : binaries) {
    if (!binary.linked) {
      EMBER_RETURN_IF_ERROR(CopyFile(binary.fd.Get(), "/" + binary.name, binary.info.st_size));
    }
    binary.fd.Reset();
  }
  EMBER_RETURN_IF_ERROR(SecureRootAndMakeOutputDir(args.uid, args.gid));

  if (!args.daemonize && !args.new_pid_ns) {
    EMBER_RETURN_IF_ERROR(EnterVmm(args, dev_null.Get()));
    return absl::InternalError("unreachable: EnterVmm returned OK");
  }

  if (args.new_pid_ns && ::unshare(CLONE_NEWPID) != 0) return ErrnoError("unshare(CLONE_NEWPID)");
  int status_pipe[2];
  if (::pipe2(status_pipe, O_CLOEXEC) != 0) return ErrnoError("pipe2");
  UniqueFd status_read(status_pipe[0]);
  UniqueFd status_write(status_pipe[1]);
  if (!args.daemonize) PrepareForwarding();
  pid_t child = ::fork();
  if (child < 0) return ErrnoError("fork");
  if (child == 0) {
    status_read.Reset();
    ResetSignals();  // the VMM starts with default dispositions and nothing blocked.
    absl::Status failure = EnterVmm(args, dev_null.Get());
    std::string message(failure.message());
    (void)!::write(status_write.Get(), message.data(), message.size());
    ::_exit(1);
  }
  status_write.Reset();
  dev_null.Reset();
  // The child holds the only copy of the control socket, so its peer sees EOF when it dies.
  if (args.pass_fd) ::close(*args.pass_fd);
  return SuperviseChild(args, child, std::move(status_read));
}

}  // namespace ember::jailer
