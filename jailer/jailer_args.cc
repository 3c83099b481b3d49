#include "jailer/jailer_args.h"

#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <climits>
#include <functional>
#include <map>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "vmm/base/status.h"

namespace ember::jailer {
namespace {

absl::Status Refuse(const std::string& flag, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(flag, ": ", what));
}

// Strict unsigned decimal: digits only, no sign, no spaces, no overflow.
absl::StatusOr<uint64_t> ParseDecimal(const std::string& flag, const std::string& text,
                                      uint64_t max) {
  uint64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value, 10);
  if (text.empty() || text[0] == '+' || text[0] == '-' || ec == std::errc::invalid_argument ||
      ptr != end) {
    return Refuse(flag, absl::StrCat("\"", text, "\" is not a decimal number"));
  }
  if (ec == std::errc::result_out_of_range || value > max) {
    return Refuse(flag, absl::StrCat("\"", text, "\" is out of range (at most ", max, ")"));
  }
  return value;
}

// uid or gid. (uid_t)-1 means "leave unchanged" to setresuid, so it is not a usable id.
absl::StatusOr<uint32_t> ParseId(const std::string& flag, const std::string& text) {
  EMBER_ASSIGN_OR_RETURN(uint64_t id, ParseDecimal(flag, text, UINT32_MAX - 1));
  return static_cast<uint32_t>(id);
}

bool HasDotDot(const std::string& path) {
  std::vector<std::string> parts = absl::StrSplit(path, '/');
  for (const std::string& part : parts) {
    if (part == "..") return true;
  }
  return false;
}

absl::Status CheckPath(const std::string& flag, const std::string& path) {
  if (path.empty()) return Refuse(flag, "empty path");
  if (HasDotDot(path)) return Refuse(flag, absl::StrCat("path \"", path, "\" contains \"..\""));
  return absl::OkStatus();
}

absl::Status CheckId(const std::string& id) {
  if (id.empty()) return Refuse("--id", "empty id");
  if (id.size() > kMaxIdLength) {
    return Refuse(
        "--id", absl::StrCat("id is ", id.size(), " characters long (at most ", kMaxIdLength, ")"));
  }
  for (char c : id) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    if (!ok) {
      return Refuse("--id",
                    absl::StrCat("\"", id, "\" may contain only letters, digits and dashes"));
    }
  }
  return absl::OkStatus();
}

// "memory.max=256M" -> {memory.max, 256M}. The file name becomes a path component under the
// cgroup directory, so it is held to the kernel's interface-file spelling.
absl::StatusOr<CgroupSetting> ParseCgroup(const std::string& text) {
  size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) {
    return Refuse("--cgroup", absl::StrCat("\"", text, "\" is not FILE=VALUE"));
  }
  CgroupSetting setting{text.substr(0, eq), text.substr(eq + 1)};
  size_t dot = setting.file.find('.');
  bool file_ok = dot != std::string::npos && dot > 0 && dot + 1 < setting.file.size();
  for (char c : setting.file) {
    // Upper case for hugetlb's page sizes ("hugetlb.2MB.max"); never a '/'.
    file_ok = file_ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '_' || c == '.');
  }
  if (!file_ok) {
    return Refuse("--cgroup", absl::StrCat("\"", setting.file,
                                           "\" is not a cgroup file name (controller.knob)"));
  }
  if (setting.value.find('\n') != std::string::npos) {
    return Refuse("--cgroup", "value contains a newline");
  }
  return setting;
}

// Relative path under a cgroup hierarchy's root; leading and trailing slashes are dropped.
absl::StatusOr<std::string> ParseParentCgroup(const std::string& text) {
  if (HasDotDot(text)) {
    return Refuse("--parent-cgroup", absl::StrCat("path \"", text, "\" contains \"..\""));
  }
  std::vector<std::string> parts = absl::StrSplit(text, '/', absl::SkipEmpty());
  for (const std::string& part : parts) {
    if (part == ".") return Refuse("--parent-cgroup", "path components may not be \".\"");
  }
  if (parts.empty()) return Refuse("--parent-cgroup", "empty path");
  std::string joined;
  for (const auto& part : parts) {
    if (!joined.empty()) joined += '/';
    joined += part;
  }
  return joined;
}

}  // namespace

std::string JailerArgs::ExecName() const {
  size_t slash = exec_file.rfind('/');
  return slash == std::string::npos ? exec_file : exec_file.substr(slash + 1);
}

std::string JailerArgs::ChrootDir() const {
  std::string base = chroot_base_dir;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  if (base == "/") base.clear();
  return absl::StrCat(base, "/", ExecName(), "/", id, "/root");
}

std::string JailerArgs::CgroupRelativePath() const {
  return absl::StrCat(parent_cgroup.value_or(ExecName()), "/", id);
}

absl::StatusOr<JailerArgs> ParseJailerArgs(const std::vector<std::string>& argv) {
  JailerArgs args;
  std::set<std::string> seen;
  bool have_uid = false;
  bool have_gid = false;

  using ValueHandler = std::function<absl::Status(const std::string& flag, const std::string&)>;
  using SwitchHandler = std::function<void()>;
  // Flags that may be given more than once; every other flag is refused the second time.
  const std::set<std::string> repeatable = {"--cgroup", "--resource-limit", "--tap", "--device"};

  const std::map<std::string, ValueHandler> valued = {
      {"--id",
       [&](const std::string&, const std::string& v) {
         args.id = v;
         return CheckId(v);
       }},
      {"--exec-file",
       [&](const std::string& flag, const std::string& v) -> absl::Status {
         EMBER_RETURN_IF_ERROR(CheckPath(flag, v));
         args.exec_file = v;
         std::string name = args.ExecName();
         if (name.empty() || name == ".") {
           return Refuse(flag, absl::StrCat("\"", v, "\" does not name a file"));
         }
         return absl::OkStatus();
       }},
      {"--uid",
       [&](const std::string& flag, const std::string& v) -> absl::Status {
         EMBER_ASSIGN_OR_RETURN(args.uid, ParseId(flag, v));
         have_uid = true;
         return absl::OkStatus();
       }},
      {"--gid",
       [&](const std::string& flag, const std::string& v) -> absl::Status {
         EMBER_ASSIGN_OR_RETURN(args.gid, ParseId(flag, v));
         have_gid = true;
         return absl::OkStatus();
       }},
      {"--supplementary-gid",
       [&](const std::string& flag, const std::string& v) -> absl::Status {
         EMBER_ASSIGN_OR_RETURN(gid_t gid, ParseId(flag, v));
         args.supplementary_gid = gid;
         return absl::OkStatus();
       }},
      {"--chroot-base-dir",
       [&](const std::string& flag, const std::string& v) -> absl::Status {
         EMBER_RETURN_IF_ERROR(CheckPath(flag, v));
         if (v[0] != '/') return Refuse(flag, absl::StrCat("\"", v, "\" is not absolute"));
         args.chroot_base_dir = v;
         return absl::OkStatus();
       }},
      {"--netns",
       [&](const std::string& flag, const std::string& v) -> absl::Status {
         EMBER_RETURN_IF_ERROR(CheckPath(flag, v));
         args.netns = v;
         return absl::OkStatus();
       }},
      {"--cgroup-version",
       [&](const std::string& flag, const std::string& v) -> absl::Status {
         if (v != "1" && v != "2") {
           return Refuse(flag, absl::StrCat("\"", v, "\" is not 1 or 2"));
         }
         args.cgroup_version = v == "1" ? 1 : 2;
         return absl::OkStatus();
       }},
      {"--cgroup",
       [&](const std::string&, const std::string& v) -> absl::Status {
         EMBER_ASSIGN_OR_RETURN(CgroupSetting setting, ParseCgroup(v));
         args.cgroups.push_back(std::move(setting));
         return absl::OkStatus();
       }},
      {"--parent-cgroup",
       [&](const std::string&, const std::string& v) -> absl::Status {
         EMBER_ASSIGN_OR_RETURN(args.parent_cgroup, ParseParentCgroup(v));
         return absl::OkStatus();
       }},
      {"--resource-limit",
       [&](const std::string& flag, const std::string& v) -> absl::Status {
         size_t eq = v.find('=');
         std::string name = v.substr(0, eq);
         if (eq == std::string::npos || (name != "fsize" && name != "no-file" && name != "nproc")) {
           return Refuse(flag,
                         absl::StrCat("\"", v, "\" is not fsize=N, no-file=N or nproc=N"));
         }
         EMBER_ASSIGN_OR_RETURN(uint64_t n, ParseDecimal(flag, v.substr(eq + 1), UINT64_MAX - 1));
         if (name == "fsize") {
           args.fsize_limit = n;
         } else if (name == "nproc") {
           if (n < 1) return Refuse(flag, "nproc must be at least 1");
           args.nproc_limit = n;
         } else {
           if (n < 3) return Refuse(flag, "no-file must be at least 3 (stdin, stdout, stderr)");
           args.no_file_limit = n;
         }
         return absl::OkStatus();
       }},
      {"--tap",
       [&](const std::string& flag, const std::string& v) -> absl::Status {
         // IFNAMSIZ - 1 characters, no '/' or whitespace: the kernel's rules for a name.
         bool ok = !v.empty() && v.size() < 16 && v != "." && v != "..";
         for (char c : v) ok = ok && c != '/' && c != ':' && c > ' ' && c < 127;
         if (!ok) return Refuse(flag, absl::StrCat("\"", v, "\" is not a network interface name"));
         args.taps.push_back(v);
         return absl::OkStatus();
       }},
      {"--device",
       [&](const std::string& flag, const std::string& v) -> absl::Status {
         if (v != "kvm" && v != "tun" && v != "userfaultfd") {
           return Refuse(flag, absl::StrCat("\"", v, "\" is not kvm, tun or userfaultfd"));
         }
         if (!args.devices) args.devices.emplace();
         args.devices->push_back(v);
         return absl::OkStatus();
       }},
      {"--pass-fd",
       [&](const std::string& flag, const std::string& v) -> absl::Status {
         EMBER_ASSIGN_OR_RETURN(uint64_t fd, ParseDecimal(flag, v, INT_MAX));
         if (fd < 3) return Refuse(flag, "must be 3 or more (0, 1 and 2 are always kept)");
         args.pass_fd = static_cast<int>(fd);
         return absl::OkStatus();
       }},
  };
  const std::map<std::string, SwitchHandler> switches = {
      {"--new-pid-ns", [&] { args.new_pid_ns = true; }},
      {"--isolate", [&] { args.isolate = true; }},
      {"--daemonize", [&] { args.daemonize = true; }},
      {"--allow-root", [&] { args.allow_root = true; }},
      {"--help", [&] { args.help = true; }},
  };

  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (arg == "--") {
      args.vmm_args.assign(argv.begin() + static_cast<std::ptrdiff_t>(i) + 1, argv.end());
      break;
    }
    std::string flag = arg;
    std::optional<std::string> inline_value;
    if (size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      flag = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }
    if (!repeatable.contains(flag) && !seen.insert(flag).second) {
      return Refuse(flag, "given more than once");
    }
    if (auto it = switches.find(flag); it != switches.end()) {
      if (inline_value) return Refuse(flag, "takes no value");
      it->second();
      continue;
    }
    auto it = valued.find(flag);
    if (it == valued.end()) {
      if (arg.rfind("-", 0) == 0) return Refuse(arg, "unknown flag (see --help)");
      return Refuse(arg, "unexpected argument (VMM arguments go after \"--\")");
    }
    std::string value;
    if (inline_value) {
      value = *inline_value;
    } else {
      if (i + 1 >= argv.size()) return Refuse(flag, "missing value");
      value = argv[++i];
    }
    EMBER_RETURN_IF_ERROR(it->second(flag, value));
  }

  if (args.help) return args;
  if (args.id.empty()) return Refuse("--id", "required");
  if (args.exec_file.empty()) return Refuse("--exec-file", "required");
  if (!have_uid) return Refuse("--uid", "required");
  if (!have_gid) return Refuse("--gid", "required");
  if (!args.allow_root && args.uid == 0) {
    return Refuse("--uid", "0 (root) is refused unless --allow-root is given");
  }
  if (!args.allow_root && args.gid == 0) {
    return Refuse("--gid", "0 (root) is refused unless --allow-root is given");
  }
  if (!args.allow_root && args.supplementary_gid == 0u) {
    return Refuse("--supplementary-gid", "0 (root) is refused unless --allow-root is given");
  }
  if (!args.taps.empty() && !args.isolate) {
    return Refuse("--tap", "creates a tap in the jail's own network namespace: needs --isolate");
  }
  if (args.parent_cgroup && args.cgroups.empty()) {
    return Refuse("--parent-cgroup", "has no effect without --cgroup");
  }
  return args;
}

absl::Status CheckExecFile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Refuse("--exec-file", absl::StrCat("\"", path, "\" does not exist or is unreadable"));
  }
  if (!S_ISREG(st.st_mode)) {
    return Refuse("--exec-file", absl::StrCat("\"", path, "\" is not a regular file"));
  }
  if ((st.st_mode & 0111) == 0) {
    return Refuse("--exec-file", absl::StrCat("\"", path, "\" is not executable"));
  }
  return absl::OkStatus();
}

std::string JailerUsage() {
  return R"(usage: ember-jailer --id ID --exec-file PATH --uid UID --gid GID [options] [-- VMM-ARGS...]

Builds a jail for one microVM and execs PATH inside it as UID:GID with no capabilities.
The jail is <chroot-base-dir>/<exec name>/<id>/root; PATH is copied (or hard-linked) into it
and /dev/kvm, /dev/net/tun and /dev/userfaultfd are created there, owned by UID:GID. The
jail's root and all of that are root's; the binary may write only in /out (UID:GID, 0700).

  --id ID                   letters, digits and dashes, at most 64 characters
  --exec-file PATH          binary to run in the jail (must be statically linked); an
                            ember-config beside it (ember-vmm's JSON config reader) goes in too
  --uid UID, --gid GID      identity to run as; 0 is refused without --allow-root
  --supplementary-gid GID   the binary's one supplementary group (default: none)
  --allow-root              permit uid or gid 0 (capabilities are still all dropped)
  --chroot-base-dir DIR     absolute; default /srv/jailer
  --netns PATH              join this network namespace (e.g. /run/netns/NAME)
  --isolate                 new ipc, uts and network namespaces (no host interfaces); with
                            --netns, new ipc and uts ones and PATH's network namespace
  --tap NAME                create tap NAME in the jail's network namespace, or take the one
                            a --netns namespace has, owned by UID:GID (repeatable; needs
                            --isolate)
  --device kvm|tun|userfaultfd
                            only these device nodes in the jail (repeatable); default all
  --new-pid-ns              run the binary as pid 1 of a new pid namespace; its host pid is
                            written to /<exec name>.pid in the jail
  --cgroup-version 1|2      hierarchy for --cgroup; default 2
  --cgroup FILE=VALUE       write VALUE to FILE of the jail's cgroup (repeatable),
                            e.g. memory.max=268435456, pids.max=64
  --parent-cgroup PATH      the jail's cgroup is <hierarchy>/<PATH>/<id>; default PATH is
                            the exec name
  --resource-limit fsize=N  RLIMIT_FSIZE in bytes (repeatable with no-file, nproc)
  --resource-limit nproc=N  RLIMIT_NPROC (the uid's processes and threads)
  --resource-limit no-file=N
                            RLIMIT_NOFILE; default 2048
  --daemonize               detach: new session, stdio on /dev/null, jailer exits 0 once
                            the binary has been exec'd; pid in /<exec name>.pid
  --pass-fd N               keep inherited fd N (e.g. the control socket) open in the VMM
  --help                    this text

Exit status: 2 for a refused command line, 1 when building the jail fails; otherwise the
jailer becomes (or, with --new-pid-ns in the foreground, waits for and mirrors) the binary.
)";
}

}  // namespace ember::jailer
