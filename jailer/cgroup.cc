#include "jailer/cgroup.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::jailer {
namespace {

using base::ErrnoError;
using base::UniqueFd;

// mountinfo escapes ' ', '\t', '\n' and '\\' as a backslash and three octal digits.
std::string Unescape(std::string_view text) {
  auto octal = [](char c) { return c >= '0' && c <= '7'; };
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 3 < text.size() && octal(text[i + 1]) && octal(text[i + 2]) &&
        octal(text[i + 3])) {
      out += static_cast<char>((text[i + 1] - '0') * 64 + (text[i + 2] - '0') * 8 +
                               (text[i + 3] - '0'));
      i += 3;
    } else {
      out += text[i];
    }
  }
  return out;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoError("open", path);
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.Get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("read", path);
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  return text;
}

// cgroup files take one write each; a short write would be a kernel refusal anyway.
absl::Status WriteCgroupFile(const std::string& path, const std::string& value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return ErrnoError("open", path);
  ssize_t n = ::write(fd.Get(), value.data(), value.size());
  if (n < 0) return ErrnoError(absl::StrCat("write \"", value, "\" to"), path);
  return absl::OkStatus();
}

// Makes `dir` exist; reports whether this call created it.
absl::StatusOr<bool> MakeDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) == 0) return true;
  if (errno != EEXIST) return ErrnoError("mkdir", dir);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return ErrnoError("stat", dir);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(dir, " exists and is not a directory"));
  }
  return false;
}

std::vector<std::string> Components(const std::string& relative) {
  return absl::StrSplit(relative, '/', absl::SkipEmpty());
}

absl::StatusOr<std::string> SetUpV2(const JailerArgs& args, const std::string& mount, pid_t pid) {
  std::set<std::string> controllers;
  for (const auto& setting : args.cgroups) {
    std::string controller = ControllerOf(setting.file);
    if (controller != "cgroup") controllers.insert(controller);  // core files need none.
  }
  EMBER_ASSIGN_OR_RETURN(std::string available_text, ReadFile(mount + "/cgroup.controllers"));
  std::vector<std::string> available =
      absl::StrSplit(available_text, absl::ByAnyChar(" \n"), absl::SkipEmpty());
  for (const auto& controller : controllers) {
    if (std::find(available.begin(), available.end(), controller) == available.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("cgroup v2 controller \"", controller, "\" is not available in ", mount,
                       " (it may be bound to a v1 hierarchy; see --cgroup-version 1)"));
    }
  }
  // Controllers must be enabled in every ancestor's subtree_control, from the root down.
  std::string dir = mount;
  std::vector<std::string> parts = Components(args.CgroupRelativePath());
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) EMBER_RETURN_IF_ERROR(MakeDir(dir).status());
    EMBER_ASSIGN_OR_RETURN(std::string enabled_text, ReadFile(dir + "/cgroup.subtree_control"));
    std::vector<std::string> enabled =
        absl::StrSplit(enabled_text, absl::ByAnyChar(" \n"), absl::SkipEmpty());
    for (const auto& controller : controllers) {
      if (std::find(enabled.begin(), enabled.end(), controller) != enabled.end()) continue;
      EMBER_RETURN_IF_ERROR(
          WriteCgroupFile(dir + "/cgroup.subtree_control", absl::StrCat("+", controller)));
    }
    dir += "/" + parts[i];
  }
  EMBER_RETURN_IF_ERROR(MakeDir(dir).status());
  for (const auto& setting : args.cgroups) {
    EMBER_RETURN_IF_ERROR(WriteCgroupFile(dir + "/" + setting.file, setting.value));
  }
  EMBER_RETURN_IF_ERROR(WriteCgroupFile(dir + "/cgroup.procs", std::to_string(pid)));
  return dir;
}

absl::StatusOr<std::string> SetUpV1Hierarchy(const JailerArgs& args, const std::string& mount,
                                             const std::vector<const CgroupSetting*>& settings,
                                             pid_t pid) {
  std::string dir = mount;
  for (const auto& part : Components(args.CgroupRelativePath())) {
    std::string parent = dir;
    dir += "/" + part;
    EMBER_ASSIGN_OR_RETURN(bool created, MakeDir(dir));
    // A new v1 cpuset starts with no cpus and no mems and then refuses every task; give it
    // its parent's, as the kernel's cgroup.clone_children would.
    if (created && ::access((dir + "/cpuset.cpus").c_str(), F_OK) == 0) {
      for (const char* file : {"/cpuset.cpus", "/cpuset.mems"}) {
        EMBER_ASSIGN_OR_RETURN(std::string value, ReadFile(parent + file));
        EMBER_RETURN_IF_ERROR(WriteCgroupFile(dir + file, value));
      }
    }
  }
  for (const CgroupSetting* setting : settings) {
    EMBER_RETURN_IF_ERROR(WriteCgroupFile(dir + "/" + setting->file, setting->value));
  }
  EMBER_RETURN_IF_ERROR(WriteCgroupFile(dir + "/cgroup.procs", std::to_string(pid)));
  return dir;
}

}  // namespace

std::vector<MountInfoEntry> ParseMountInfo(const std::string& text) {
  std::vector<MountInfoEntry> entries;
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  for (const std::string& line : lines) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ');
    // id parent dev root mount-point options [optional...] - fstype source super-options
    auto dash = std::find(fields.begin(), fields.end(), "-");
    if (fields.size() < 10 || dash == fields.end() || dash - fields.begin() < 6 ||
        fields.end() - dash < 4) {
      continue;
    }
    MountInfoEntry entry;
    entry.mount_point = Unescape(fields[4]);
    entry.fs_type = dash[1];
    entry.super_options = absl::StrSplit(dash[3], ',');
    entries.push_back(std::move(entry));
  }
  return entries;
}

absl::StatusOr<std::string> FindCgroup2Mount(const std::vector<MountInfoEntry>& mounts) {
  for (const auto& m : mounts) {
    if (m.fs_type == "cgroup2") return m.mount_point;
  }
  return absl::NotFoundError("no cgroup v2 hierarchy is mounted");
}

absl::StatusOr<std::string> FindCgroup1Mount(const std::vector<MountInfoEntry>& mounts,
                                             const std::string& controller) {
  for (const auto& m : mounts) {
    if (m.fs_type != "cgroup") continue;
    if (std::find(m.super_options.begin(), m.super_options.end(), controller) !=
        m.super_options.end()) {
      return m.mount_point;
    }
  }
  return absl::NotFoundError(
      absl::StrCat("no cgroup v1 hierarchy carries the \"", controller, "\" controller"));
}

CgroupPlacement PlaceControllers(const std::vector<MountInfoEntry>& mounts,
                                 const std::string& v2_controllers,
                                 const std::vector<std::string>& wanted) {
  CgroupPlacement placement;
  std::vector<std::string> in_v2 =
      absl::StrSplit(v2_controllers, absl::ByAnyChar(" \n"), absl::SkipEmpty());
  absl::StatusOr<std::string> v2 = FindCgroup2Mount(mounts);
  bool all_in_v2 = v2.ok() && std::all_of(wanted.begin(), wanted.end(), [&](const auto& c) {
                     return std::find(in_v2.begin(), in_v2.end(), c) != in_v2.end();
                   });
  if (all_in_v2) {
    placement.version = 2;
    placement.controllers = wanted;
    placement.mounts = {*v2};
    return placement;
  }
  for (const std::string& controller : wanted) {
    absl::StatusOr<std::string> mount = FindCgroup1Mount(mounts, controller);
    if (!mount.ok()) {
      placement.missing.push_back(controller);
      continue;
    }
    placement.version = 1;
    placement.controllers.push_back(controller);
    if (std::find(placement.mounts.begin(), placement.mounts.end(), *mount) ==
        placement.mounts.end()) {
      placement.mounts.push_back(*mount);
    }
  }
  return placement;
}

std::string ControllerOf(const std::string& file) { return file.substr(0, file.find('.')); }

absl::StatusOr<std::vector<std::string>> SetUpCgroups(const JailerArgs& args, pid_t pid) {
  std::vector<std::string> dirs;
  if (args.cgroups.empty()) return dirs;
  EMBER_ASSIGN_OR_RETURN(std::string mountinfo, ReadFile("/proc/self/mountinfo"));
  std::vector<MountInfoEntry> mounts = ParseMountInfo(mountinfo);
  if (args.cgroup_version == 2) {
    EMBER_ASSIGN_OR_RETURN(std::string mount, FindCgroup2Mount(mounts));
    EMBER_ASSIGN_OR_RETURN(std::string dir, SetUpV2(args, mount, pid));
    dirs.push_back(std::move(dir));
    return dirs;
  }
  // v1: controllers may share a mount ("cpu,cpuacct"); each mount is set up once.
  std::map<std::string, std::vector<const CgroupSetting*>> by_mount;
  for (const auto& setting : args.cgroups) {
    EMBER_ASSIGN_OR_RETURN(std::string mount, FindCgroup1Mount(mounts, ControllerOf(setting.file)));
    by_mount[mount].push_back(&setting);
  }
  for (const auto& [mount, settings] : by_mount) {
    EMBER_ASSIGN_OR_RETURN(std::string dir, SetUpV1Hierarchy(args, mount, settings, pid));
    dirs.push_back(std::move(dir));
  }
  return dirs;
}

}  // namespace ember::jailer
