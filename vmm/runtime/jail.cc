#include "vmm/runtime/jail.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nettle/sha2.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "jailer/cgroup.h"
#include "vmm/agent_client/socket_file.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::runtime {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kMaxJailIdLength = 64;  // ember-jailer's
// A digested jail id: the prefix, then this many bytes of SHA-256 in hex (63 characters).
constexpr char kDigestIdPrefix[] = "h--";
constexpr std::size_t kDigestBytes = 30;
// What a VMM needs beyond its guest's memory (its own pages, io_uring, device buffers), and
// its threads (vCPUs, the VMM loop, io_uring workers).
constexpr std::uint64_t kVmmOverheadMib = 256;
constexpr int kPidsMax = 1024;
// How long DestroyJail waits for the processes it killed to leave their cgroups.
constexpr std::chrono::seconds kCgroupEmptyWait{5};

std::uint64_t Fnv1a(const std::string& text) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : text) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

absl::StatusOr<std::string> ReadSmall(const std::string& path) {
  std::ifstream in(path);
  if (!in) return base::ErrnoError("open", path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status MakeDirs(const std::string& path, mode_t mode) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return absl::InternalError("mkdir " + path + ": " + ec.message());
  if (::chmod(path.c_str(), mode) != 0) return base::ErrnoError("chmod", path);
  return absl::OkStatus();
}

// The hierarchies the jailer puts a VMM's memory and pids limits in, and those settings.
struct CgroupPlan {
  int version = 0;
  std::vector<std::string> mounts;
  std::vector<std::string> settings;  // FILE=VALUE
};

absl::StatusOr<CgroupPlan> PlanCgroups(uint32_t memory_mib) {
  EMBER_ASSIGN_OR_RETURN(std::string mountinfo, ReadSmall("/proc/self/mountinfo"));
  std::vector<jailer::MountInfoEntry> mounts = jailer::ParseMountInfo(mountinfo);
  std::string v2_controllers;
  if (absl::StatusOr<std::string> v2 = jailer::FindCgroup2Mount(mounts); v2.ok()) {
    v2_controllers = ReadSmall(*v2 + "/cgroup.controllers").value_or("");
  }
  jailer::CgroupPlacement placement =
      jailer::PlaceControllers(mounts, v2_controllers, {"memory", "pids"});
  if (placement.version == 0 || !placement.missing.empty()) {
    return absl::FailedPreconditionError(
        "jailer: no cgroup hierarchy here carries both memory and pids (a jailed VM runs in "
        "cgroups of its own, which is also how delete ends it); set \"jailer\": {\"enabled\": "
        "false} in the runtime config to run VMMs unjailed");
  }
  CgroupPlan plan;
  plan.version = placement.version;
  plan.mounts = placement.mounts;
  const std::uint64_t bytes = (memory_mib + kVmmOverheadMib) << 20;
  plan.settings = {std::string(plan.version == 2 ? "memory.max=" : "memory.limit_in_bytes=") +
                       std::to_string(bytes),
                   "pids.max=" + std::to_string(kPidsMax)};
  return plan;
}

// Whether the uid lease file at `path` is held: by a holder directory that still exists.
bool LeaseHeld(const std::string& path) {
  absl::StatusOr<std::string> holder = ReadSmall(path);
  if (!holder.ok()) return false;
  struct stat st {};
  return !holder->empty() && ::stat(holder->c_str(), &st) == 0;
}

absl::StatusOr<std::pair<std::uint32_t, std::string>> LeaseUid(const JailerSettings& settings,
                                                               const std::string& container_id,
                                                               const std::string& holder) {
  const std::string dir = settings.chroot_base_dir + "/uids";
  EMBER_RETURN_IF_ERROR(MakeDirs(dir, 0700));
  base::UniqueFd lock(::open((dir + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock) return base::ErrnoError("open", dir + "/.lock");
  while (::flock(lock.Get(), LOCK_EX) != 0) {
    if (errno != EINTR) return base::ErrnoError("flock", dir + "/.lock");
  }
  // Start where the id hashes to, so that containers rarely scan past each other's uids.
  const std::uint32_t start = static_cast<std::uint32_t>(Fnv1a(container_id) % settings.uid_count);
  for (std::uint32_t i = 0; i < settings.uid_count; ++i) {
    const std::uint32_t uid = settings.uid_base + (start + i) % settings.uid_count;
    const std::string path = dir + "/" + std::to_string(uid);
    if (LeaseHeld(path)) continue;
    const std::string temp = path + ".new";
    {
      std::ofstream out(temp, std::ios::trunc);
      out << holder;
      if (!out.flush()) return base::ErrnoError("write", temp);
    }
    if (::rename(temp.c_str(), path.c_str()) != 0) return base::ErrnoError("rename", path);
    return std::make_pair(uid, path);
  }
  return absl::ResourceExhaustedError("jailer: every uid of jailer.uid_base/uid_count is taken");
}

// `from` into the jail at `to`: a hard link (the same file the runtime chose), else a copy.
absl::Status LinkOrCopy(const std::string& from, const std::string& to, bool copy_allowed) {
  ::unlink(to.c_str());
  if (::link(from.c_str(), to.c_str()) == 0) return absl::OkStatus();
  if (errno != EXDEV || !copy_allowed) {
    absl::Status error = base::ErrnoError("link", from + " into the jail as " + to);
    if (errno == EXDEV) {
      return absl::FailedPreconditionError(
          std::string(error.message()) +
          ": jailer.chroot_base_dir must be on the image cache's file system");
    }
    return error;
  }
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return absl::InternalError("copy " + from + " into the jail: " + ec.message());
  return absl::OkStatus();
}

}  // namespace

std::string JailIdFor(const std::string& container_id) {
  // Ids passed through never contain "--", digests always do: no container id can name
  // another's jail. The digest is SHA-256 (240 of its bits), which no one can collide.
  bool usable = !container_id.empty() && container_id.size() <= kMaxJailIdLength &&
                container_id.find("--") == std::string::npos;
  for (char c : container_id) usable = usable && (std::isalnum(static_cast<unsigned char>(c)) || c == '-');
  if (usable) return container_id;
  sha256_ctx sha;
  sha256_init(&sha);
  sha256_update(&sha, container_id.size(), reinterpret_cast<const uint8_t*>(container_id.data()));
  uint8_t digest[SHA256_DIGEST_SIZE];
  sha256_digest(&sha, sizeof digest, digest);
  std::string id = kDigestIdPrefix;
  static constexpr char kDigits[] = "0123456789abcdef";
  for (std::size_t i = 0; i < kDigestBytes; ++i) {
    id += kDigits[digest[i] >> 4];
    id += kDigits[digest[i] & 0xf];
  }
  return id;
}

absl::StatusOr<Jail> PlanJail(const JailerSettings& settings, const std::string& container_id,
                              const std::string& vmm_path, const std::string& holder,
                              uint32_t memory_mib) {
  // ember-jailer's chroot is CHROOT_BASE/<--exec-file's basename>/ID/root.
  const std::string exec_name = fs::path(vmm_path).filename().string();
  if (exec_name.empty() || exec_name == "." || exec_name == "..") {
    return absl::InvalidArgumentError("jailer: the VMM path \"" + vmm_path +
                                      "\" names no file");
  }
  // The VMM never walks these from outside its root: only root needs to reach them.
  EMBER_RETURN_IF_ERROR(MakeDirs(settings.chroot_base_dir, 0700));
  EMBER_RETURN_IF_ERROR(MakeDirs(settings.chroot_base_dir + "/" + exec_name, 0700));
  EMBER_ASSIGN_OR_RETURN(CgroupPlan cgroups, PlanCgroups(memory_mib));
  Jail jail;
  jail.jail_id = JailIdFor(container_id);
  jail.dir = settings.chroot_base_dir + "/" + exec_name + "/" + jail.jail_id;
  jail.root = jail.dir + "/root";
  for (const std::string& mount : cgroups.mounts) {
    jail.cgroup_dirs.push_back(mount + "/" + settings.cgroup_parent + "/" + jail.jail_id);
  }
  // Made here, exclusively: a jail is never shared, whatever led two containers to one id.
  if (::mkdir(jail.dir.c_str(), 0755) != 0) {
    if (errno == EEXIST) {
      return absl::AlreadyExistsError("jailer: the jail " + jail.dir +
                                      " exists already (another container's, or one a failed "
                                      "delete kept); it is not shared");
    }
    return base::ErrnoError("mkdir", jail.dir);
  }
  absl::StatusOr<std::pair<std::uint32_t, std::string>> lease =
      LeaseUid(settings, container_id, holder);
  if (!lease.ok()) {
    ::rmdir(jail.dir.c_str());
    return lease.status();
  }
  jail.uid = lease->first;
  jail.uid_lease = lease->second;
  return jail;
}

absl::StatusOr<std::vector<std::string>> PrepareJail(const JailerSettings& settings,
                                                     const Jail& jail,
                                                     const std::string& vmm_path,
                                                     v1::VmConfig* vm,
                                                     const std::string& netns_path,
                                                     const std::string& tap, int control_fd) {
  EMBER_RETURN_IF_ERROR(MakeDirs(jail.root, 0755));
  v1::BootSource* boot = vm->mutable_boot_source();
  if (!boot->kernel_image_path().empty()) {
    EMBER_RETURN_IF_ERROR(LinkOrCopy(boot->kernel_image_path(), jail.root + "/kernel", true));
    boot->set_kernel_image_path("/kernel");
  }
  if (!boot->initrd_path().empty()) {
    EMBER_RETURN_IF_ERROR(LinkOrCopy(boot->initrd_path(), jail.root + "/initrd", true));
    boot->set_initrd_path("/initrd");
  }
  for (int i = 0; i < vm->drives_size(); ++i) {
    v1::Drive* drive = vm->mutable_drives(i);
    const std::string name = "/drive" + std::to_string(i);
    // A copy would cost the image's size on every create: the link is the point.
    EMBER_RETURN_IF_ERROR(LinkOrCopy(drive->path_on_host(), jail.root + name, false));
    const std::string target = jail.root + name;
    if (drive->is_read_only()) {
      // The cache's shared image: readable, never writable, by the jails' uids (its
      // directories are root's 0700, so no one else reaches it).
      if (::chmod(target.c_str(), 0644) != 0) return base::ErrnoError("chmod", target);
    } else if (::chown(target.c_str(), jail.uid, jail.uid) != 0 ||
               ::chmod(target.c_str(), 0600) != 0) {
      // The container's own copy.
      return base::ErrnoError("chown", target);
    }
    drive->set_path_on_host(name);
  }
  if (vm->has_vsock()) vm->mutable_vsock()->set_uds_path(std::string("/out/v.sock"));

  CgroupPlan cgroups;
  EMBER_ASSIGN_OR_RETURN(cgroups, PlanCgroups(vm->machine_config().mem_size_mib()));
  const std::string uid = std::to_string(jail.uid);
  std::vector<std::string> argv = {settings.path,  "--id",   jail.jail_id, "--exec-file", vmm_path,
                                   "--uid",        uid,      "--gid",
                                   uid,            "--chroot-base-dir", settings.chroot_base_dir,
                                   "--pass-fd",    std::to_string(control_fd), "--isolate",
                                   "--device",     "kvm",    "--cgroup-version",
                                   std::to_string(cgroups.version), "--parent-cgroup",
                                   settings.cgroup_parent};
  if (!netns_path.empty()) argv.insert(argv.end(), {"--netns", netns_path});
  if (!tap.empty()) argv.insert(argv.end(), {"--tap", tap, "--device", "tun"});
  for (const std::string& setting : cgroups.settings) argv.insert(argv.end(), {"--cgroup", setting});
  return argv;
}

absl::Status DestroyJail(const std::string& dir, const std::string& uid_lease,
                         const std::vector<std::string>& cgroup_dirs) {
  // A jail whose processes may still run keeps its uid and its directory: another container
  // leased that uid would share it with a live (perhaps compromised) VMM, and the directory
  // holds what that VMM may write, which root must not walk while it can.
  std::vector<std::string> still_running;
  for (const std::string& cgroup : cgroup_dirs) {
    if (::access(cgroup.c_str(), F_OK) != 0) continue;
    const auto deadline = std::chrono::steady_clock::now() + kCgroupEmptyWait;
    while (true) {
      std::string procs = ReadSmall(cgroup + "/cgroup.procs").value_or("");
      // Empty now, yet a process still on its way in (a jailer joining as its killed
      // supervisor dies) makes rmdir EBUSY: kill again, as for one that was there.
      if (procs.empty()) {
        if (::rmdir(cgroup.c_str()) == 0 || errno == ENOENT) break;
        if (errno != EBUSY) {
          still_running.push_back(std::string(base::ErrnoError("rmdir", cgroup).message()));
          break;
        }
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        std::istringstream in(procs);
        std::string pids;
        for (pid_t pid; in >> pid;) pids += (pids.empty() ? "" : " ") + std::to_string(pid);
        still_running.push_back(cgroup + " still holds pids " + (pids.empty() ? "(busy)" : pids));
        break;
      }
      std::istringstream in(procs);
      for (pid_t pid; in >> pid;) ::kill(pid, SIGKILL);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  if (!still_running.empty()) {
    std::string what;
    for (const std::string& line : still_running) what += (what.empty() ? "" : "; ") + line;
    return absl::FailedPreconditionError(
        "the jail's processes did not end within " + std::to_string(kCgroupEmptyWait.count()) +
        " s after SIGKILL (" + what + "); its uid lease and " + dir +
        " are kept: delete again once they have ended");
  }
  absl::Status first;
  if (!dir.empty()) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    if (ec) first = absl::InternalError("remove " + dir + ": " + ec.message());
  }
  if (!uid_lease.empty() && ::unlink(uid_lease.c_str()) != 0 && errno != ENOENT && first.ok()) {
    first = base::ErrnoError("unlink", uid_lease);
  }
  return first;
}

absl::StatusOr<base::UniqueFd> OpenJailVsock(const std::string& jail_root,
                                             std::uint32_t jail_uid) {
  const std::string out = jail_root + "/out";
  base::UniqueFd dir(::open(out.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) return base::ErrnoError("open", out);
  absl::StatusOr<base::UniqueFd> socket =
      agent_client::OpenSocketFile(dir.Get(), "v.sock", static_cast<uid_t>(jail_uid));
  if (!socket.ok()) {
    return absl::Status(socket.status().code(),
                        "in " + out + ": " + std::string(socket.status().message()));
  }
  return socket;
}

}  // namespace ember::runtime
