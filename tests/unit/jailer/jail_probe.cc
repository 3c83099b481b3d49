// jail_probe: a test-only stand-in for ember-vmm. ember-jailer execs it inside a jail and it
// reports, one "key=value" line each, what a process in there can see and do, so the root
// tests can assert on the jail from the inside. Linked statically: the jail has no libraries.
//
// Arguments (all optional, in any order; every argument is also echoed as argN=...):
//   --out PATH        write the report to PATH (inside the jail) instead of stdout
//   --fork N          try to fork N children; report how many forks succeeded
//   --write-bytes N   try to write N bytes to /probe-fsize; report the outcome
//   --wait            after the report, print "ready" and block until stdin reaches EOF
//   --exit N          exit with status N (default 0)
//   --term-handler    exit 99 on SIGTERM (as pid 1 of a pid namespace, only a process with a
//                     handler can be signalled at all)
#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace {

std::string OpenFds() {
  std::string list;
  for (int fd = 0; fd < 1024; ++fd) {
    if (fcntl(fd, F_GETFD) >= 0) list += (list.empty() ? "" : ",") + std::to_string(fd);
  }
  return list;
}

std::string Limit(int resource) {
  struct rlimit limit {};
  if (getrlimit(resource, &limit) != 0) return "error";
  auto text = [](rlim_t v) {
    return v == RLIM_INFINITY ? std::string("unlimited") : std::to_string(v);
  };
  return text(limit.rlim_cur) + "," + text(limit.rlim_max);
}

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string DirEntries(const char* path) {
  DIR* dir = opendir(path);
  if (dir == nullptr) return std::string("error:") + strerror(errno);
  std::vector<std::string> names;
  while (dirent* e = readdir(dir)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(dir);
  std::sort(names.begin(), names.end());
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ",") + n;
  return list;
}

// "c:MAJOR:MINOR:UID:GID:MODE" for a device node, or what it is instead.
std::string Node(const char* path) {
  struct stat st {};
  if (lstat(path, &st) != 0) return "missing";
  if (!S_ISCHR(st.st_mode)) return "not-chr";
  char buf[96];
  std::snprintf(buf, sizeof(buf), "c:%u:%u:%u:%u:%04o", major(st.st_rdev), minor(st.st_rdev),
                st.st_uid, st.st_gid, st.st_mode & 07777);
  return buf;
}

std::string TryOpen(const char* path, int flags) {
  int fd = open(path, flags | O_CLOEXEC);
  if (fd < 0) return std::string("error:") + strerrorname_np(errno);
  close(fd);
  return "ok";
}

// Whether a new file can be made at `path` (removed again at once).
std::string TryCreate(const char* path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return strerrorname_np(errno);
  close(fd);
  unlink(path);
  return "ok";
}

std::string FdKind(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return "closed";
  if (S_ISCHR(st.st_mode)) {
    return "chr:" + std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
  }
  if (S_ISFIFO(st.st_mode)) return "fifo";
  if (S_ISSOCK(st.st_mode)) return "sock";
  if (S_ISREG(st.st_mode)) return "reg";
  return "other";
}

}  // namespace

int main(int argc, char** argv) {
  // Before anything opens a file of its own: what the jailer let through.
  std::string fds = OpenFds();
  std::string out_path;
  long fork_count = -1;
  long write_bytes = -1;
  bool wait_for_eof = false;
  int exit_code = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    bool has_value = i + 1 < argc;
    if (arg == "--out" && has_value) {
      out_path = argv[++i];
    } else if (arg == "--fork" && has_value) {
      fork_count = std::atol(argv[++i]);
    } else if (arg == "--write-bytes" && has_value) {
      write_bytes = std::atol(argv[++i]);
    } else if (arg == "--exit" && has_value) {
      exit_code = std::atoi(argv[++i]);
    } else if (arg == "--wait") {
      wait_for_eof = true;
    } else if (arg == "--term-handler") {
      signal(SIGTERM, [](int) { _exit(99); });
    }
  }

  std::ostringstream r;
  r << "fds=" << fds << "\n";
  r << "argc=" << argc << "\n";
  for (int i = 0; i < argc; ++i) r << "arg" << i << "=" << argv[i] << "\n";
  int env_count = 0;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) ++env_count;
  r << "env_count=" << env_count << "\n";
  r << "pid=" << getpid() << "\nppid=" << getppid() << "\nsid=" << getsid(0)
    << "\npgid=" << getpgid(0) << "\n";
  uid_t ruid, euid, suid;
  gid_t rgid, egid, sgid;
  getresuid(&ruid, &euid, &suid);
  getresgid(&rgid, &egid, &sgid);
  r << "uid=" << ruid << "," << euid << "," << suid << "\n";
  r << "gid=" << rgid << "," << egid << "," << sgid << "\n";
  r << "groups=" << getgroups(0, nullptr) << "\n";
  gid_t group_list[8];
  int group_count = getgroups(8, group_list);
  r << "group_list=";
  for (int i = 0; i < group_count; ++i) r << (i > 0 ? "," : "") << group_list[i];
  r << "\n";

  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct caps[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capget, &header, caps) == 0) {
    auto join = [&](auto field) {
      return Hex((static_cast<uint64_t>(caps[1].*field) << 32) | caps[0].*field);
    };
    r << "cap_eff=" << join(&__user_cap_data_struct::effective) << "\n";
    r << "cap_prm=" << join(&__user_cap_data_struct::permitted) << "\n";
    r << "cap_inh=" << join(&__user_cap_data_struct::inheritable) << "\n";
  }
  uint64_t bounding = 0;
  uint64_t ambient = 0;
  for (int cap = 0; cap < 64; ++cap) {
    if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1) bounding |= uint64_t{1} << cap;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0) == 1) ambient |= uint64_t{1} << cap;
  }
  r << "cap_bnd=" << Hex(bounding) << "\ncap_amb=" << Hex(ambient) << "\n";
  r << "no_new_privs=" << prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) << "\n";
  r << "rlimit_nofile=" << Limit(RLIMIT_NOFILE) << "\n";
  r << "rlimit_fsize=" << Limit(RLIMIT_FSIZE) << "\n";

  char cwd[4096];
  r << "cwd=" << (getcwd(cwd, sizeof(cwd)) != nullptr ? cwd : "error") << "\n";
  r << "root_entries=" << DirEntries("/") << "\n";
  r << "dev_entries=" << DirEntries("/dev") << "\n";
  struct stat root_st {
  }, up_st{};
  stat("/", &root_st);
  stat("/../..", &up_st);
  r << "dotdot_is_root=" << (root_st.st_ino == up_st.st_ino && root_st.st_dev == up_st.st_dev)
    << "\n";
  r << "root_owner=" << root_st.st_uid << ":" << root_st.st_gid << "\n";
  char root_mode[8];
  std::snprintf(root_mode, sizeof(root_mode), "%04o", root_st.st_mode & 07777);
  r << "root_mode=" << root_mode << "\n";
  r << "create_at_root=" << TryCreate("/probe-created") << "\n";
  r << "create_in_out=" << TryCreate("/out/probe-created") << "\n";
  struct stat host_st {};
  r << "sees_etc_passwd=" << (stat("/etc/passwd", &host_st) == 0) << "\n";
  r << "sees_proc=" << (stat("/proc/self", &host_st) == 0) << "\n";
  r << "dev_kvm=" << Node("/dev/kvm") << "\n";
  r << "dev_tun=" << Node("/dev/net/tun") << "\n";
  r << "dev_uffd=" << Node("/dev/userfaultfd") << "\n";
  r << "open_kvm=" << TryOpen("/dev/kvm", O_RDWR) << "\n";
  r << "open_tun=" << TryOpen("/dev/net/tun", O_RDWR) << "\n";
  r << "chroot_syscall=" << (chroot("/") == 0 ? "ok" : strerrorname_np(errno)) << "\n";
  r << "mknod_syscall="
    << (mknod("/out/probe-node", S_IFCHR | 0600, makedev(1, 3)) == 0 ? "ok" : strerrorname_np(errno))
    << "\n";
  r << "setuid0=" << (setuid(0) == 0 ? "ok" : strerrorname_np(errno)) << "\n";
  r << "stdin=" << FdKind(0) << "\nstdout=" << FdKind(1) << "\nstderr=" << FdKind(2) << "\n";

  if (write_bytes >= 0) {
    signal(SIGXFSZ, SIG_IGN);  // see EFBIG instead of dying.
    int fd = open("/out/probe-fsize", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    std::string result = fd < 0 ? std::string("open:") + strerrorname_np(errno) : "ok";
    std::vector<char> data(static_cast<size_t>(write_bytes), 'x');
    if (fd >= 0) {
      ssize_t n = write(fd, data.data(), data.size());
      if (n < 0)
        result = strerrorname_np(errno);
      else if (static_cast<size_t>(n) < data.size())
        result = "short:" + std::to_string(n);
      close(fd);
    }
    r << "write_result=" << result << "\n";
  }
  if (fork_count >= 0) {
    std::vector<pid_t> children;
    std::string fork_error = "none";
    for (long i = 0; i < fork_count; ++i) {
      pid_t child = fork();
      if (child == 0) {
        pause();
        _exit(0);
      }
      if (child < 0) {
        fork_error = strerrorname_np(errno);
        break;
      }
      children.push_back(child);
    }
    r << "forks_ok=" << children.size() << "\nfork_error=" << fork_error << "\n";
    for (pid_t child : children) {
      kill(child, SIGKILL);
      waitpid(child, nullptr, 0);
    }
  }
  r << "end=1\n";

  std::string report = r.str();
  if (out_path.empty()) {
    std::fwrite(report.data(), 1, report.size(), stdout);
  } else {
    // Write then rename, so a reader never sees half a report.
    std::string tmp = out_path + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (f == nullptr) return 100;
    std::fwrite(report.data(), 1, report.size(), f);
    std::fclose(f);
    if (rename(tmp.c_str(), out_path.c_str()) != 0) return 101;
  }
  if (wait_for_eof) {
    std::fputs("ready\n", stdout);
    std::fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof(buf)) > 0) {
    }
  }
  std::fflush(stdout);
  return exit_code;
}
