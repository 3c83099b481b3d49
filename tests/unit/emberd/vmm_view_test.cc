#include "vmm/emberd/vmm_view.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "tests/support/files.h"
#include "vmm/base/atomic_file.h"
#include "vmm/base/unix_address.h"
#include "vmm/emberd/restore_plan.h"
#include "vmm/emberd/working_set_size.h"

namespace ember::emberd {
namespace {

using ::ember::testing::ReadFile;

// The value after `flag` in `args`, or "" if the flag is missing.
std::string FlagValue(const std::vector<std::string>& args, const std::string& flag) {
  auto it = std::find(args.begin(), args.end(), flag);
  return it == args.end() || it + 1 == args.end() ? "" : *(it + 1);
}

class VmmViewTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(vms_dir_ + "/vm1");
    std::filesystem::create_directories(jail_dir_ + "/vm1/root/out");
    spec_.vm_id = "vm1";
    spec_.vm_dir = vms_dir_ + "/vm1";
  }

  static constexpr JailIds kIds{840000, 3};

  std::unique_ptr<VmmView> Jailed() { return MakeJailedView(vms_dir_, jail_dir_, kIds); }

  // Launches VM `vm_id` in `view` and returns the --uid it got ("" if it got none).
  std::string LaunchedUid(VmmView& view, const std::string& vm_id,
                          const RestorePlan* restore = nullptr, absl::Status* status = nullptr) {
    LaunchSpec spec;
    spec.vm_id = vm_id;
    spec.vm_dir = vms_dir_ + "/" + vm_id;
    std::filesystem::create_directories(spec.vm_dir);
    absl::Status launched = view.PrepareLaunch(v1::VmConfig(), restore, &spec);
    if (status != nullptr) *status = launched;
    EXPECT_EQ(FlagValue(spec.jailer_args, "--uid"), FlagValue(spec.jailer_args, "--gid"));
    return FlagValue(spec.jailer_args, "--uid");
  }

  // A snapshot of vm1 in `dir`, as the manager would record it.
  v1::Snapshot SnapshotIn(const std::string& dir, const std::string& id,
                          v1::CreateSnapshotRequest::Type type) {
    v1::Snapshot snapshot;
    snapshot.set_snapshot_id(id);
    snapshot.set_vm_id("vm1");
    snapshot.set_type(type);
    snapshot.set_state_path(dir + "/state");
    snapshot.set_memory_path(dir + "/memory");
    return snapshot;
  }

  // Writes the files a jailed VMM would have written for `snapshot` into vm1's jail, as the
  // uid vm1's launch gave it; false (the test should skip) when not root and so unable to.
  bool WriteInJail(VmmView& view, const v1::Snapshot& snapshot) {
    if (::geteuid() != 0) return false;
    const std::string uid = LaunchedUid(view, "vm1");
    VmmView::SnapshotFiles files = view.SnapshotTarget(snapshot);
    for (const std::string& path : {jail_dir_ + "/vm1/root" + files.state,
                                    jail_dir_ + "/vm1/root" + files.memory}) {
      std::ofstream(path) << (path.ends_with(".mem") ? "memory" : "state");
      EXPECT_EQ(::chown(path.c_str(), static_cast<uid_t>(std::stoul(uid)), 0), 0) << path;
    }
    return true;
  }

  ::ember::testing::ScopedTempDir temp_{"ember-vmm-view-test"};
  const std::string vms_dir_ = temp_.path() + "/vms";
  const std::string jail_dir_ = temp_.path() + "/jails";
  LaunchSpec spec_;
};

TEST_F(VmmViewTest, DirectLaunchNamesTheHostsPaths) {
  auto view = MakeDirectView(vms_dir_);
  ASSERT_TRUE(view->PrepareLaunch(v1::VmConfig(), nullptr, &spec_).ok());
  EXPECT_EQ(FlagValue(spec_.vmm_args, "--config-proto"), spec_.vm_dir + "/config.pb");
  EXPECT_EQ(FlagValue(spec_.vmm_args, "--serial-out"), spec_.vm_dir + "/console.log");
  EXPECT_EQ(FlagValue(spec_.vmm_args, "--exit-record"), view->ExitRecordPath("vm1"));
  EXPECT_TRUE(spec_.jail_files.empty());
}

// emberd's rules over <temp>/allowed, holding a kernel and a disk.
class CheckedFilesTest : public VmmViewTest {
 protected:
  void SetUp() override {
    VmmViewTest::SetUp();
    std::filesystem::create_directories(allowed_);
    std::ofstream(kernel_) << "kernel";
    std::ofstream(disk_) << "disk";
    auto rules = base::PathRules::Open({allowed_});
    ASSERT_TRUE(rules.ok()) << rules.status();
    rules_ = std::move(*rules);
  }

  // What spec_.files[i] reads as, as the VMM would reopen it.
  std::string Handed(std::size_t i) {
    return i < spec_.files.size()
               ? ReadFile("/proc/self/fd/" + std::to_string(spec_.files[i].Get()))
               : "(no file " + std::to_string(i) + ")";
  }

  // Prepares a direct restore of a snapshot of a VM with `config` (emberd's record, the
  // clone's overrides applied); the overrides the VMM is sent.
  v1::RestoreOverrides DirectRestoreSends(const v1::VmConfig& config) {
    RestorePlan plan;
    plan.state_path = "/s";
    plan.memory_path = "/m";
    EXPECT_TRUE(MakeDirectView(vms_dir_, &rules_)->PrepareLaunch(config, &plan, &spec_).ok());
    return SentOverrides();
  }
  v1::RestoreOverrides SentOverrides() {
    v1::RestoreOverrides sent;
    EXPECT_TRUE(sent.ParseFromString(ReadFile(FlagValue(spec_.vmm_args, "--restore-overrides"))));
    return sent;
  }

  // After the check, the disk's name leads elsewhere.
  void SwapTheDisk() {
    const std::string other = temp_.path() + "/other";
    std::ofstream(other) << "other";
    ASSERT_EQ(::rename(other.c_str(), disk_.c_str()), 0);
  }

  const std::string allowed_ = temp_.path() + "/allowed";
  const std::string kernel_ = allowed_ + "/vmlinux";
  const std::string disk_ = allowed_ + "/disk.img";
  base::PathRules rules_;
};

TEST_F(CheckedFilesTest, DirectLaunchNamesTheFilesEmberdCheckedNotTheirPaths) {
  v1::VmConfig config;
  config.mutable_boot_source()->set_kernel_image_path(kernel_);
  config.add_drives()->set_path_on_host(disk_);
  auto view = MakeDirectView(vms_dir_, &rules_);
  ASSERT_TRUE(view->PrepareLaunch(config, nullptr, &spec_).ok());
  SwapTheDisk();
  v1::VmConfig seen;
  ASSERT_TRUE(seen.ParseFromString(ReadFile(FlagValue(spec_.vmm_args, "--config-proto"))));
  EXPECT_EQ(seen.boot_source().kernel_image_path(), InheritedFilePath(0));
  EXPECT_EQ(seen.drives(0).path_on_host(), InheritedFilePath(1));
  EXPECT_EQ(Handed(0), "kernel");
  EXPECT_EQ(Handed(1), "disk");
}

TEST_F(CheckedFilesTest, DirectLaunchRefusesAFileThatLeadsOutOfTheAllowedDirectories) {
  const std::string link = allowed_ + "/out.img";
  ASSERT_EQ(::symlink("/etc/passwd", link.c_str()), 0);
  v1::VmConfig config;
  config.add_drives()->set_path_on_host(link);
  absl::Status refused = MakeDirectView(vms_dir_, &rules_)->PrepareLaunch(config, nullptr, &spec_);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("config.drives[0].path_on_host: " + link), std::string::npos)
      << refused;
}

TEST_F(CheckedFilesTest, DirectRestoreOverridesEveryDriveWithTheFileEmberdChecked) {
  v1::VmConfig config;  // the snapshotted VM's, as emberd recorded it
  v1::Drive* drive = config.add_drives();
  drive->set_drive_id("root");
  drive->set_path_on_host(disk_);
  const v1::RestoreOverrides sent = DirectRestoreSends(config);
  SwapTheDisk();
  EXPECT_EQ(sent.drive_path_on_host().at("root"), InheritedFilePath(0));
  EXPECT_EQ(Handed(0), "disk");
  // Drives of a state file emberd has no record of: ember-vmm applies emberd's rule.
  EXPECT_EQ(FlagValue(spec_.vmm_args, "--allow-dir"), allowed_);
}

// emberd's rules as emberd builds them for its VMMs: the client's <allowed>, and its own
// function images (<temp>/fn-images), read-only.
class ImageDirsTest : public CheckedFilesTest {
 protected:
  void SetUp() override {
    CheckedFilesTest::SetUp();
    std::filesystem::create_directories(images_);
    std::ofstream(image_) << "image";
    auto rules = base::PathRules::Open(
        {allowed_}, "emberd", {{images_, base::PathRules::OwnDir::Use::kReadOnlyFiles}});
    ASSERT_TRUE(rules.ok()) << rules.status();
    rules_ = std::move(*rules);
  }

  static v1::VmConfig WithRoot(const std::string& path, bool read_only) {
    v1::VmConfig config;
    v1::Drive* drive = config.add_drives();
    drive->set_drive_id("root");
    drive->set_path_on_host(path);
    drive->set_is_read_only(read_only);
    return config;
  }

  const std::string images_ = temp_.path() + "/fn-images";
  const std::string image_ = images_ + "/root.img";
};

TEST_F(ImageDirsTest, ALaunchAttachesAFunctionImageOnlyAsAReadOnlyDrive) {
  ASSERT_TRUE(MakeDirectView(vms_dir_, &rules_)
                  ->PrepareLaunch(WithRoot(image_, /*read_only=*/true), nullptr, &spec_)
                  .ok());
  EXPECT_EQ(Handed(0), "image");
  LaunchSpec writable;
  writable.vm_id = "vm1";
  writable.vm_dir = spec_.vm_dir;
  absl::Status refused = MakeDirectView(vms_dir_, &rules_)
                             ->PrepareLaunch(WithRoot(image_, false), nullptr, &writable);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
  EXPECT_TRUE(writable.files.empty());
}

TEST_F(ImageDirsTest, ARestoreReachesAFunctionImageOnlyThroughEmbersRecordNeverAStateFile) {
  // emberd's record of a function's snapshot: its root image, read-only.
  EXPECT_EQ(DirectRestoreSends(WithRoot(image_, true)).drive_path_on_host().at("root"),
            InheritedFilePath(0));
  EXPECT_EQ(Handed(0), "image");
  // A state file emberd has no record of: ember-vmm accepts what it names under the client's
  // directories only.
  EXPECT_EQ(FlagValue(spec_.vmm_args, "--allow-dir"), allowed_);
  EXPECT_EQ(std::count(spec_.vmm_args.begin(), spec_.vmm_args.end(), "--allow-dir"), 1);
  // An override is the client's: never a function image, read-only or not.
  RestorePlan plan;
  plan.state_path = "/s";
  plan.memory_path = "/m";
  (*plan.overrides.mutable_drive_path_on_host())["root"] = image_;
  LaunchSpec clone;
  clone.vm_id = "vm1";
  clone.vm_dir = spec_.vm_dir;
  absl::Status refused = MakeDirectView(vms_dir_, &rules_)
                             ->PrepareLaunch(WithRoot(image_, true), &plan, &clone);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
  EXPECT_NE(refused.message().find("drive \"root\""), std::string::npos) << refused;
}

// <allowed>/run holds what the VMM makes by name (log, metrics, vsock socket); after emberd's
// check, <allowed>/run is swapped for a symlink to <temp>/outside.
class MadeFilesTest : public CheckedFilesTest {
 protected:
  void SetUp() override {
    CheckedFilesTest::SetUp();
    std::filesystem::create_directories(run_);
    std::filesystem::create_directories(outside_);
  }

  void SwapTheRunDirectory() {
    ASSERT_EQ(::rename(run_.c_str(), (allowed_ + "/checked").c_str()), 0);
    ASSERT_EQ(::symlink(outside_.c_str(), run_.c_str()), 0);
  }

  // `path` as this process reaches it: the VMM's /proc/self/fd/<kFirstFileFd + i> is
  // spec_.files[i] here.
  std::string AsTheVmmFindsIt(const std::string& path) {
    const std::string prefix = "/proc/self/fd/";
    if (path.rfind(prefix, 0) != 0) return path;
    std::size_t end = path.find('/', prefix.size());
    const int vmm_fd = std::stoi(path.substr(prefix.size(), end - prefix.size()));
    const auto index = static_cast<std::size_t>(vmm_fd - kFirstFileFd);
    if (index >= spec_.files.size()) return "(no file " + std::to_string(index) + ")";
    return prefix + std::to_string(spec_.files[index].Get()) +
           (end == std::string::npos ? "" : path.substr(end));
  }

  // A socket bound at `path` as the VMM binds its vsock socket.
  base::UniqueFd BindAsTheVmm(const std::string& path) {
    base::UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    auto address = base::UnixAddress(AsTheVmmFindsIt(path));
    EXPECT_TRUE(address.ok()) << address.status();
    if (!address.ok()) return sock;
    // sockaddr_un is the address type bind() takes through its generic pointer.
    EXPECT_EQ(
        ::bind(sock.Get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(*address)), 0)
        << path << ": " << std::strerror(errno);
    return sock;
  }

  // The configuration the launched VMM reads.
  v1::VmConfig Seen() {
    v1::VmConfig seen;
    EXPECT_TRUE(seen.ParseFromString(ReadFile(FlagValue(spec_.vmm_args, "--config-proto"))));
    return seen;
  }

  const std::string run_ = allowed_ + "/run";
  const std::string outside_ = temp_.path() + "/outside";
};

TEST_F(MadeFilesTest, DirectLaunchLogsIntoTheFileEmberdOpenedNotWhereItsNameLeadsLater) {
  v1::VmConfig config;
  config.mutable_logger()->set_log_path(run_ + "/vm.log");
  ASSERT_TRUE(MakeDirectView(vms_dir_, &rules_)->PrepareLaunch(config, nullptr, &spec_).ok());
  SwapTheRunDirectory();
  std::ofstream(AsTheVmmFindsIt(Seen().logger().log_path()), std::ios::app) << "a log line";
  EXPECT_EQ(ReadFile(allowed_ + "/checked/vm.log"), "a log line");
  EXPECT_FALSE(std::filesystem::exists(outside_ + "/vm.log"));
}

TEST_F(MadeFilesTest, DirectLaunchMakesMetricsAndTheVsockSocketInTheDirectoryEmberdChecked) {
  v1::VmConfig config;
  config.mutable_metrics()->set_metrics_path(run_ + "/metrics.json");
  config.mutable_vsock()->set_uds_path(run_ + "/v.sock");
  config.mutable_vsock()->set_guest_cid(3);
  ASSERT_TRUE(MakeDirectView(vms_dir_, &rules_)->PrepareLaunch(config, nullptr, &spec_).ok());
  SwapTheRunDirectory();
  const v1::VmConfig seen = Seen();
  // As ember-vmm does: metrics rewritten by rename, the socket bound by name.
  ASSERT_TRUE(base::WriteFileAtomically(AsTheVmmFindsIt(seen.metrics().metrics_path()), "{}\n",
                                        0600, base::AtomicFile::Durability::kRenameOnly)
                  .ok());
  base::UniqueFd sock = BindAsTheVmm(seen.vsock().uds_path());
  EXPECT_EQ(ReadFile(allowed_ + "/checked/metrics.json"), "{}\n");
  EXPECT_TRUE(std::filesystem::is_socket(allowed_ + "/checked/v.sock"));
  EXPECT_TRUE(std::filesystem::is_empty(outside_));
}

TEST_F(MadeFilesTest, DirectSnapshotIsWrittenInTheDirectoryEmberdOpenedByTheClientsRule) {
  auto view = MakeDirectView(vms_dir_, &rules_);
  const v1::Snapshot snapshot = SnapshotIn(run_, "s1", v1::CreateSnapshotRequest::FULL);
  absl::StatusOr<base::UniqueFd> dir = view->OpenSnapshotDir(snapshot, /*clients=*/true);
  ASSERT_TRUE(dir.ok()) << dir.status();
  SwapTheRunDirectory();
  // As ember-vmm makes the files in the directory handed over with the request.
  ASSERT_TRUE(base::WriteFileAtomically("/proc/self/fd/" + std::to_string(dir->Get()) + "/state",
                                        "state")
                  .ok());
  EXPECT_EQ(ReadFile(allowed_ + "/checked/state"), "state");
  EXPECT_TRUE(std::filesystem::is_empty(outside_));
  // Once the name leads out of the allowed directories, a new snapshot there is refused.
  absl::StatusOr<base::UniqueFd> refused = view->OpenSnapshotDir(snapshot, /*clients=*/true);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_NE(refused.status().message().find("snapshot_dir"), std::string::npos)
      << refused.status();
}

TEST_F(MadeFilesTest, DirectSnapshotInEmberdsRecordDirectoryRefusesASymlink) {
  const std::string record = temp_.path() + "/record";
  ASSERT_EQ(::symlink(outside_.c_str(), record.c_str()), 0);
  absl::StatusOr<base::UniqueFd> refused = MakeDirectView(vms_dir_, &rules_)->OpenSnapshotDir(
      SnapshotIn(record, "s1", v1::CreateSnapshotRequest::FULL), /*clients=*/false);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
}

// A UFFD restore by state_path of a DIFF snapshot in <allowed>/run (its base beside it), its
// files opened by emberd (OpenRestoreFiles) before the test swaps their names.
class RestoreFilesTest : public MadeFilesTest {
 protected:
  void SetUp() override {
    MadeFilesTest::SetUp();
    for (const std::string name : {"state", "memory", "base", "memory.ws"}) {
      std::ofstream(run_ + "/" + name) << name;
    }
    std::ofstream(secret_) << "secret";
    ASSERT_EQ(::chmod(secret_.c_str(), 0400), 0);
    plan_.state_path = run_ + "/state";
    plan_.memory_path = run_ + "/memory";
    plan_.base_memory_paths = {run_ + "/base"};
    plan_.uffd = true;
  }

  // Opens the plan's files as emberd does, then replaces every name by a symlink to a
  // root-only file, and prepares the clone's launch.
  void OpenSwapAndLaunch() {
    ASSERT_TRUE(OpenRestoreFiles("state_path", /*by_path=*/true, &rules_, &plan_).ok());
    for (const std::string name : {"state", "memory", "base", "memory.ws"}) {
      const std::string path = run_ + "/" + name;
      ASSERT_EQ(::unlink(path.c_str()), 0);
      ASSERT_EQ(::symlink(secret_.c_str(), path.c_str()), 0);
    }
    absl::Status launched =
        MakeDirectView(vms_dir_, &rules_)->PrepareLaunch(v1::VmConfig(), &plan_, &spec_);
    ASSERT_TRUE(launched.ok()) << launched;
  }

  // What the VMM reads at the path its flag names.
  std::string ReadAsTheVmm(const std::string& path) { return ReadFile(AsTheVmmFindsIt(path)); }

  const std::string secret_ = temp_.path() + "/secret";
  RestorePlan plan_;
};

TEST_F(RestoreFilesTest, DirectRestoreHandsOverTheMemoryFileAndBasesEmberdOpenedNotTheirNames) {
  OpenSwapAndLaunch();
  EXPECT_EQ(ReadAsTheVmm(FlagValue(spec_.vmm_args, "--restore-from")), "state");
  EXPECT_EQ(ReadAsTheVmm(FlagValue(spec_.vmm_args, "--restore-mem")), "memory");
  // Named as emberd knows it: the clone's own diffs name it so as their base.
  EXPECT_EQ(FlagValue(spec_.vmm_args, "--restore-mem-name"), run_ + "/memory");
  const std::string base = FlagValue(spec_.vmm_args, "--base-memory-file");
  const std::string name = run_ + "/base=";
  ASSERT_EQ(base.rfind(name, 0), 0u) << base;
  EXPECT_EQ(ReadAsTheVmm(base.substr(name.size())), "base");
}

TEST_F(RestoreFilesTest, DirectRestoreHandsOverTheWorkingSetEmberdOpenedNotItsName) {
  plan_.prefetch = true;
  OpenSwapAndLaunch();
  EXPECT_EQ(ReadAsTheVmm(FlagValue(spec_.vmm_args, "--working-set")), "memory.ws");
}

TEST_F(RestoreFilesTest, JailedRestoreCopiesTheWorkingSetEmberdOpenedNotAFifoAtItsName) {
  plan_.prefetch = true;
  plan_.jail_memory_name = "snap.mem";
  ASSERT_TRUE(OpenRestoreFiles("state_path", /*by_path=*/true, &rules_, &plan_).ok());
  struct stat opened {};
  ASSERT_EQ(::stat((run_ + "/memory.ws").c_str(), &opened), 0);
  // Reopened by name, the fork server would block copying it into the jail.
  ASSERT_EQ(::unlink((run_ + "/memory.ws").c_str()), 0);
  ASSERT_EQ(::mkfifo((run_ + "/memory.ws").c_str(), 0600), 0);
  absl::Status prepared = MakeJailedView(vms_dir_, jail_dir_, kIds, &rules_)
                              ->PrepareLaunch(v1::VmConfig(), &plan_, &spec_);
  ASSERT_TRUE(prepared.ok()) << prepared;
  auto set = std::find_if(spec_.jail_files.begin(), spec_.jail_files.end(),
                          [](const JailFile& file) { return file.jail_name == "snap.mem.ws"; });
  ASSERT_NE(set, spec_.jail_files.end());
  ASSERT_GE(set->file, 0) << "copied from its name";
  struct stat handed {};
  ASSERT_EQ(::fstat(spec_.files[static_cast<std::size_t>(set->file)].Get(), &handed), 0);
  EXPECT_TRUE(S_ISREG(handed.st_mode));
  EXPECT_EQ(handed.st_ino, opened.st_ino);
}

TEST_F(RestoreFilesTest, AWorkingSetLargerThanAnySetOfItsMemoryIsRefused) {
  plan_.prefetch = true;
  std::ofstream(run_ + "/memory") << std::string(8192, 'm');  // two pages: one run at most
  std::ofstream(run_ + "/memory.ws") << std::string(MaxWorkingSetBytes(8192) + 1, 'w');
  absl::Status refused = OpenRestoreFiles("state_path", /*by_path=*/true, &rules_, &plan_);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
  EXPECT_NE(refused.message().find("prefetch_working_set"), std::string::npos) << refused;
}

TEST_F(RestoreFilesTest, ACatalogSnapshotWhoseDirectoryBecameASymlinkOutIsNotOpened) {
  // A client's snapshot_dir (not emberd's record directory), renamed and replaced by a
  // symlink to a directory outside holding a snapshot's names.
  plan_.record_dir = temp_.path() + "/record";
  for (const std::string name : {"state", "memory", "base"}) {
    std::ofstream(outside_ + "/" + name) << "outside";
  }
  SwapTheRunDirectory();
  absl::Status opened = OpenRestoreFiles("snapshot_id", /*by_path=*/false, &rules_, &plan_);
  EXPECT_FALSE(opened.ok()) << "the working set would be recorded in "
                            << (plan_.working_set_dir ? "the directory outside" : "none");
}

TEST_F(RestoreFilesTest, DirectRestoreRecordsTheWorkingSetInTheDirectoryEmberdOpened) {
  ASSERT_TRUE(OpenRestoreFiles("state_path", /*by_path=*/true, &rules_, &plan_).ok());
  SwapTheRunDirectory();
  ASSERT_TRUE(MakeDirectView(vms_dir_, &rules_)->PrepareLaunch(v1::VmConfig(), &plan_, &spec_).ok());
  // As ember-vmm records it when the VM ends (vmm_uffd.cc).
  ASSERT_TRUE(base::WriteFileAtomically(
                  AsTheVmmFindsIt(FlagValue(spec_.vmm_args, "--working-set")), "recorded")
                  .ok());
  EXPECT_EQ(ReadFile(allowed_ + "/checked/memory.ws"), "recorded");
  EXPECT_TRUE(std::filesystem::is_empty(outside_));
}

TEST_F(MadeFilesTest, DirectLaunchRefusesALogThatIsASymlinkOrAFifo) {
  ASSERT_EQ(::symlink("../vmlinux", (run_ + "/link.log").c_str()), 0);
  ASSERT_EQ(::mkfifo((run_ + "/fifo.log").c_str(), 0600), 0);
  for (const std::string name : {"link.log", "fifo.log"}) {
    v1::VmConfig config;
    config.mutable_logger()->set_log_path(run_ + "/" + name);
    LaunchSpec spec;
    spec.vm_id = "vm1";
    spec.vm_dir = spec_.vm_dir;
    absl::Status refused = MakeDirectView(vms_dir_, &rules_)->PrepareLaunch(config, nullptr, &spec);
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << name << ": " << refused;
    EXPECT_NE(refused.message().find("config.logger.log_path"), std::string::npos) << refused;
  }
  EXPECT_EQ(ReadFile(kernel_), "kernel");
}

TEST_F(MadeFilesTest, DirectRestoreBindsTheVsockSocketInTheDirectoryEmberdChecked) {
  v1::VmConfig config;  // the snapshotted VM's, with the clone's overrides applied
  config.mutable_vsock()->set_uds_path(run_ + "/clone.sock");
  const v1::RestoreOverrides sent = DirectRestoreSends(config);
  SwapTheRunDirectory();
  base::UniqueFd sock = BindAsTheVmm(sent.vsock_uds_path());
  EXPECT_TRUE(std::filesystem::is_socket(allowed_ + "/checked/clone.sock"));
  EXPECT_TRUE(std::filesystem::is_empty(outside_));
}

// A restore of the snapshot in allowed_ ("state", "memory"), its files opened as the manager
// opens them; then both names are made to lead to other files, as a racing writer would.
RestorePlan OpenedThenSwapped(const std::string& dir, const base::PathRules& rules) {
  std::ofstream(dir + "/state") << "state";
  std::ofstream(dir + "/memory") << "memory";
  RestorePlan plan;
  plan.state_path = dir + "/state";
  plan.memory_path = dir + "/memory";
  plan.jail_memory_name = "snap.mem";
  EXPECT_TRUE(OpenRestoreFiles("state_path", /*by_path=*/true, &rules, &plan).ok());
  for (const std::string& name : {plan.state_path, plan.memory_path}) {
    std::ofstream(dir + "/other") << "other";
    EXPECT_EQ(::rename((dir + "/other").c_str(), name.c_str()), 0);
  }
  return plan;
}

TEST_F(CheckedFilesTest, DirectRestoreHandsTheVmmTheStateFileEmberdOpenedNotItsName) {
  RestorePlan plan = OpenedThenSwapped(allowed_, rules_);
  ASSERT_TRUE(
      MakeDirectView(vms_dir_, &rules_)->PrepareLaunch(v1::VmConfig(), &plan, &spec_).ok());
  EXPECT_EQ(FlagValue(spec_.vmm_args, "--restore-from"), InheritedFilePath(0));
  EXPECT_EQ(Handed(0), "state");
}

TEST_F(CheckedFilesTest, JailedRestorePutsTheFilesEmberdOpenedIntoTheJailNotTheirNames) {
  RestorePlan plan = OpenedThenSwapped(allowed_, rules_);
  ASSERT_TRUE(MakeJailedView(vms_dir_, jail_dir_, kIds, &rules_)
                  ->PrepareLaunch(v1::VmConfig(), &plan, &spec_)
                  .ok());
  std::map<std::string, std::string> placed;  // jail name -> what its source reads as
  for (const JailFile& file : spec_.jail_files) {
    placed[file.jail_name] = file.file >= 0 ? Handed(static_cast<std::size_t>(file.file))
                                            : "(by name) " + ReadFile(file.host_path);
  }
  EXPECT_EQ(placed["snapshot.state"], "state");
  EXPECT_EQ(placed["snap.mem"], "memory");
}

TEST_F(CheckedFilesTest, RestoreOfAFifoIsRefusedAtOnce) {
  ASSERT_EQ(::mkfifo((allowed_ + "/state").c_str(), 0600), 0);
  std::ofstream(allowed_ + "/memory") << "memory";
  RestorePlan plan;
  plan.state_path = allowed_ + "/state";
  plan.memory_path = allowed_ + "/memory";
  absl::Status refused = OpenRestoreFiles("state_path", /*by_path=*/true, &rules_, &plan);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
}

TEST_F(CheckedFilesTest, RestoreByIdRefusesASymlinkedStateFile) {
  std::ofstream(allowed_ + "/real") << "state";
  ASSERT_EQ(::symlink((allowed_ + "/real").c_str(), (allowed_ + "/state").c_str()), 0);
  std::ofstream(allowed_ + "/memory") << "memory";
  RestorePlan plan;
  plan.state_path = allowed_ + "/state";
  plan.memory_path = allowed_ + "/memory";
  EXPECT_FALSE(OpenRestoreFiles("snapshot_id", /*by_path=*/false, &rules_, &plan).ok());
}

TEST_F(CheckedFilesTest, JailedLaunchLinksTheFilesEmberdCheckedIntoTheJail) {
  v1::VmConfig config;
  config.mutable_boot_source()->set_kernel_image_path(kernel_);
  config.add_drives()->set_path_on_host(disk_);
  auto view = MakeJailedView(vms_dir_, jail_dir_, kIds, &rules_);
  ASSERT_TRUE(view->PrepareLaunch(config, nullptr, &spec_).ok());
  SwapTheDisk();
  std::map<std::string, int> files;
  for (const JailFile& file : spec_.jail_files) files[file.jail_name] = file.file;
  ASSERT_EQ(files.at("kernel"), 0);
  ASSERT_EQ(files.at("drive0"), 1);
  EXPECT_EQ(files.at("config.pb"), -1);  // emberd's own file
  EXPECT_EQ(Handed(0), "kernel");
  EXPECT_EQ(Handed(1), "disk");
}

TEST_F(VmmViewTest, JailedLaunchPutsTheKernelAndDrivesIntoTheJailAndNamesThemThere) {
  v1::VmConfig config;
  config.mutable_boot_source()->set_kernel_image_path("/boot/vmlinux");
  config.add_drives()->set_path_on_host("/dev/null");
  auto view = Jailed();
  ASSERT_TRUE(view->PrepareLaunch(config, nullptr, &spec_).ok());
  EXPECT_EQ(FlagValue(spec_.vmm_args, "--config-proto"), "/config.pb");
  // What the VMM writes goes into the one directory of the jail it may write.
  EXPECT_EQ(FlagValue(spec_.vmm_args, "--serial-out"), "/out/console.log");
  EXPECT_EQ(FlagValue(spec_.vmm_args, "--exit-record"), "/out/exit");
  EXPECT_EQ(view->ExitRecordPath("vm1"), jail_dir_ + "/vm1/root/out/exit");
  // The config the jail sees names the files by their names in the jail.
  v1::VmConfig seen;
  ASSERT_TRUE(seen.ParseFromString(ReadFile(spec_.vm_dir + "/jail-config.pb")));
  EXPECT_EQ(seen.boot_source().kernel_image_path(), "/kernel");
  EXPECT_EQ(seen.drives(0).path_on_host(), "/drive0");
  std::vector<std::string> names;
  for (const JailFile& file : spec_.jail_files) names.push_back(file.jail_name);
  EXPECT_EQ(names, (std::vector<std::string>{"kernel", "drive0", "config.pb", "out/console.log"}));
}

TEST_F(VmmViewTest, JailedLaunchRefusesHostPathsTheJailCannotSee) {
  v1::VmConfig config;
  config.mutable_vsock()->set_uds_path("/tmp/v.sock");
  absl::Status refused = Jailed()->PrepareLaunch(config, nullptr, &spec_);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.message().find("vsock.uds_path"), std::string::npos) << refused;
  v1::RestoreOverrides overrides;
  overrides.set_vsock_uds_path("/tmp/v.sock");
  EXPECT_EQ(Jailed()->CheckOverrides("overrides[0]", overrides).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(MakeDirectView(vms_dir_)->CheckOverrides("overrides[0]", overrides).ok());
}

TEST_F(VmmViewTest, JailedIdsHaveNoUnderscore) {
  EXPECT_EQ(Jailed()->CheckVmId("a_b").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Jailed()->CheckVmId("a-b").ok());
  EXPECT_TRUE(MakeDirectView(vms_dir_)->CheckVmId("a_b").ok());
}

TEST_F(VmmViewTest, JailedDiffSnapshotNeedsAnEarlierOne) {
  auto view = Jailed();
  EXPECT_EQ(view->CheckSnapshot("vm1", /*diff=*/true).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(view->CheckSnapshot("vm1", /*diff=*/false).ok());
  const std::string dir = temp_.path() + "/full";
  std::filesystem::create_directories(dir);
  v1::Snapshot full = SnapshotIn(dir, "vm1-1", v1::CreateSnapshotRequest::FULL);
  if (!WriteInJail(*view, full)) GTEST_SKIP() << "writing as the jail's uid needs root";
  ASSERT_TRUE(view->FinishSnapshot(full, dir).ok());
  EXPECT_TRUE(view->CheckSnapshot("vm1", /*diff=*/true).ok());
}

TEST_F(VmmViewTest, JailedSnapshotIsMovedOutAndADiffRecordsItsBases) {
  auto view = Jailed();
  const std::string full_dir = temp_.path() + "/full";
  const std::string diff_dir = temp_.path() + "/diff";
  std::filesystem::create_directories(full_dir);
  std::filesystem::create_directories(diff_dir);
  v1::Snapshot full = SnapshotIn(full_dir, "vm1-1", v1::CreateSnapshotRequest::FULL);
  if (!WriteInJail(*view, full)) GTEST_SKIP() << "writing as the jail's uid needs root";
  ASSERT_TRUE(view->FinishSnapshot(full, full_dir).ok());
  EXPECT_EQ(ReadFile(full.memory_path()), "memory");
  // Its VM can no longer change it; every clone reads it through the snapshot group.
  for (const std::string& path : {full.state_path(), full.memory_path()}) {
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u) << path;
    EXPECT_EQ(st.st_gid, kIds.snapshot_gid()) << path;
    EXPECT_EQ(st.st_mode & 07777, 0440u) << path;
  }
  EXPECT_FALSE(std::filesystem::exists(jail_dir_ + "/vm1/root/out/vm1-1.mem"));
  EXPECT_EQ(ReadFile(full_dir + "/jail-bases"), "");
  v1::Snapshot diff = SnapshotIn(diff_dir, "vm1-2", v1::CreateSnapshotRequest::DIFF);
  ASSERT_TRUE(WriteInJail(*view, diff));
  ASSERT_TRUE(view->FinishSnapshot(diff, diff_dir).ok());
  EXPECT_EQ(ReadFile(diff_dir + "/jail-bases"), "out/vm1-1.mem " + full.memory_path() + "\n");
  // A restore of the diff links its base in under the name its state file gives it.
  RestorePlan plan;
  plan.diff = true;
  plan.snapshot_id = "vm1-2";
  plan.record_dir = diff_dir;
  plan.state_path = diff.state_path();
  plan.memory_path = diff.memory_path();
  ASSERT_TRUE(view->PlanRestore("snapshot_id", &plan).ok());
  EXPECT_EQ(plan.jail_memory_name, "vm1-2.mem");
  EXPECT_EQ(plan.jail_bases, (JailChain{{"out/vm1-1.mem", full.memory_path()}}));
}

TEST_F(VmmViewTest, AJailedSnapshotFileThatIsNotTheJailsOwnIsNotMoved) {
  auto view = Jailed();
  const std::string dir = temp_.path() + "/full";
  std::filesystem::create_directories(dir);
  v1::Snapshot full = SnapshotIn(dir, "vm1-1", v1::CreateSnapshotRequest::FULL);
  if (!WriteInJail(*view, full)) GTEST_SKIP() << "writing as the jail's uid needs root";
  // A second link to the memory file: the VMM could have linked a file that is not its own.
  const std::string jailed_memory = jail_dir_ + "/vm1/root/out/vm1-1.mem";
  ASSERT_EQ(::link(jailed_memory.c_str(), (temp_.path() + "/other").c_str()), 0);
  EXPECT_FALSE(view->FinishSnapshot(full, dir).ok());
  EXPECT_FALSE(std::filesystem::exists(full.memory_path()));
}

TEST_F(VmmViewTest, JailedBootGetsOnlyKvmAndAFileSizeBoundFromItsMemory) {
  v1::VmConfig config;
  config.mutable_machine_config()->set_mem_size_mib(256);
  ASSERT_TRUE(Jailed()->PrepareLaunch(config, nullptr, &spec_).ok());
  EXPECT_EQ(spec_.jailer_args,
            (std::vector<std::string>{"--device", "kvm", "--resource-limit",
                                      "fsize=" + std::to_string((256 + 64) << 20), "--uid",
                                      "840001", "--gid", "840001"}));
}

TEST_F(VmmViewTest, JailedVmWithATapGetsTunAndTheTapMadeInItsNetns) {
  v1::VmConfig config;
  config.add_network_interfaces()->set_host_dev_name("tap7");
  ASSERT_TRUE(Jailed()->PrepareLaunch(config, nullptr, &spec_).ok());
  EXPECT_EQ(FlagValue(spec_.jailer_args, "--tap"), "tap7");
  std::vector<std::string> devices;
  for (std::size_t i = 0; i + 1 < spec_.jailer_args.size(); ++i) {
    if (spec_.jailer_args[i] == "--device") devices.push_back(spec_.jailer_args[i + 1]);
  }
  EXPECT_EQ(devices, (std::vector<std::string>{"kvm", "tun"}));
}

TEST_F(VmmViewTest, JailedUffdRestoreIsPlannedAndGetsUserfaultfd) {
  RestorePlan plan;
  plan.uffd = true;
  plan.memory_path = vms_dir_ + "/mem";
  std::ofstream(plan.memory_path) << "m";
  plan.state_path = vms_dir_ + "/state";
  std::ofstream(plan.state_path) << "s";
  auto view = Jailed();
  ASSERT_TRUE(view->PlanRestore("state_path", &plan).ok());
  ASSERT_TRUE(view->PrepareLaunch(v1::VmConfig(), &plan, &spec_).ok());
  EXPECT_NE(std::find(spec_.jailer_args.begin(), spec_.jailer_args.end(), "userfaultfd"),
            spec_.jailer_args.end());
}

TEST_F(VmmViewTest, AVmmsFileIsReadOnlyAsARegularFileOfItsOwn) {
  auto view = Jailed();
  // Where the jailed VMM writes: its jail's output directory.
  const std::string root = jail_dir_ + "/vm1/root/out";
  EXPECT_EQ(view->OpenVmmFile("vm1", "console.log").status().code(), absl::StatusCode::kNotFound);
  std::ofstream(root + "/console.log") << "hello";
  absl::StatusOr<base::UniqueFd> fd = view->OpenVmmFile("vm1", "console.log");
  ASSERT_TRUE(fd.ok()) << fd.status();
  EXPECT_EQ(*ReadAtMost(fd->Get(), 3), "hel");
  // A symlink, even one that stays inside, a FIFO (which would block a reader) and a way out
  // of the jail are refused.
  std::ofstream(temp_.path() + "/secret") << "secret";
  ASSERT_EQ(::symlink((temp_.path() + "/secret").c_str(), (root + "/exit").c_str()), 0);
  EXPECT_EQ(view->OpenVmmFile("vm1", "exit").status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(::symlink("console.log", (root + "/inside").c_str()), 0);
  EXPECT_EQ(view->OpenVmmFile("vm1", "inside").status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(::mkfifo((root + "/fifo").c_str(), 0600), 0);
  EXPECT_EQ(view->OpenVmmFile("vm1", "fifo").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(view->OpenVmmFile("vm1", "../../../secret").ok());
}

TEST_F(VmmViewTest, DirectRestoreHandsTheOverridesToTheVmmAsOneMessage) {
  RestorePlan plan;
  plan.state_path = "/s";
  plan.memory_path = "/m";
  (*plan.overrides.mutable_drive_path_on_host())["a"] = "/a.img";
  (*plan.overrides.mutable_iface_guest_mac())["eth0"] = "02:00:00:00:00:01";
  ASSERT_TRUE(MakeDirectView(vms_dir_)->PrepareLaunch(v1::VmConfig(), &plan, &spec_).ok());
  EXPECT_EQ(FlagValue(spec_.vmm_args, "--restore-from"), "/s");
  EXPECT_EQ(FlagValue(spec_.vmm_args, "--restore-mem"), "/m");
  EXPECT_EQ(std::count(spec_.vmm_args.begin(), spec_.vmm_args.end(), "--drive-override"), 0);
  v1::RestoreOverrides sent;
  ASSERT_TRUE(sent.ParseFromString(ReadFile(FlagValue(spec_.vmm_args, "--restore-overrides"))));
  EXPECT_EQ(sent.SerializeAsString(), plan.overrides.SerializeAsString());
}

TEST_F(VmmViewTest, JailedRestoreSendsOverridesNamingTheDrivesInTheJail) {
  RestorePlan plan;
  plan.state_path = "/s";
  plan.memory_path = "/m";
  plan.jail_memory_name = "m";
  v1::VmConfig config;
  auto* drive = config.add_drives();
  drive->set_drive_id("data");
  drive->set_path_on_host("/dev/null");
  ASSERT_TRUE(Jailed()->PrepareLaunch(config, &plan, &spec_).ok());
  EXPECT_EQ(FlagValue(spec_.vmm_args, "--restore-overrides"), "/restore-overrides.pb");
  v1::RestoreOverrides sent;
  ASSERT_TRUE(sent.ParseFromString(ReadFile(spec_.vm_dir + "/restore-overrides.pb")));
  EXPECT_EQ(sent.drive_path_on_host().at("data"), "/drive0");
  std::vector<std::string> names;
  for (const JailFile& file : spec_.jail_files) names.push_back(file.jail_name);
  EXPECT_NE(std::find(names.begin(), names.end(), "restore-overrides.pb"), names.end());
}

TEST_F(VmmViewTest, JailedVmsEachGetAnIdOfTheirOwnUntilTheRangeRunsOut) {
  auto view = Jailed();
  EXPECT_EQ(LaunchedUid(*view, "a"), "840001");
  EXPECT_EQ(LaunchedUid(*view, "b"), "840002");
  EXPECT_EQ(LaunchedUid(*view, "c"), "840003");
  absl::Status status;
  EXPECT_EQ(LaunchedUid(*view, "d", nullptr, &status), "");
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_NE(status.message().find("--jailer-id-count"), std::string::npos) << status;
  // A deleted VM's id is free again.
  ASSERT_TRUE(view->RemoveVm("b").ok());
  EXPECT_EQ(LaunchedUid(*view, "d"), "840002");
}

TEST_F(VmmViewTest, AnIdOfARecordedVmIsNotGivenAgainAfterARestart) {
  auto before = Jailed();
  const std::string kept = LaunchedUid(*before, "a");
  LaunchedUid(*before, "b");
  auto after = Jailed();  // the next emberd, with the same records
  after->LoadVm("a");
  after->LoadVm("b");
  EXPECT_EQ(ReadFile(vms_dir_ + "/a/jail-id"), kept + "\n");
  const std::string fresh = LaunchedUid(*after, "c");
  EXPECT_NE(fresh, kept);
  EXPECT_EQ(fresh, "840003");
  absl::Status status;
  LaunchedUid(*after, "d", nullptr, &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
}

TEST_F(VmmViewTest, AJailedCloneGetsTheSnapshotGroupAndABootNone) {
  auto view = Jailed();
  LaunchSpec boot;
  boot.vm_id = "booted";
  boot.vm_dir = vms_dir_ + "/booted";
  std::filesystem::create_directories(boot.vm_dir);
  ASSERT_TRUE(view->PrepareLaunch(v1::VmConfig(), nullptr, &boot).ok());
  EXPECT_EQ(FlagValue(boot.jailer_args, "--supplementary-gid"), "");
  RestorePlan plan;
  plan.state_path = "/s";
  plan.memory_path = "/m";
  plan.jail_memory_name = "m";
  ASSERT_TRUE(view->PrepareLaunch(v1::VmConfig(), &plan, &spec_).ok());
  EXPECT_EQ(FlagValue(spec_.jailer_args, "--supplementary-gid"), "840000");
  EXPECT_NE(FlagValue(spec_.jailer_args, "--uid"), FlagValue(boot.jailer_args, "--uid"));
}

// Every --cgroup value in `args`.
std::vector<std::string> CgroupSettings(const std::vector<std::string>& args) {
  std::vector<std::string> settings;
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--cgroup") settings.push_back(args[i + 1]);
  }
  return settings;
}

TEST_F(VmmViewTest, AJailedVmIsLimitedInMemoryTasksAndCpuByItsSize) {
  JailCgroups v1{1, "ember-test", {"memory", "pids", "cpu"}, {"/m", "/p", "/c"}, 2};
  v1::VmConfig config;
  config.mutable_machine_config()->set_mem_size_mib(256);
  config.mutable_machine_config()->set_vcpu_count(2);
  config.add_drives()->set_path_on_host("/dev/null");
  ASSERT_TRUE(MakeJailedView(vms_dir_, jail_dir_, kIds, nullptr, v1)->PrepareLaunch(config, nullptr, &spec_).ok());
  EXPECT_EQ(CgroupSettings(spec_.jailer_args),
            (std::vector<std::string>{"memory.limit_in_bytes=" + std::to_string((256 + 128) << 20),
                                      "pids.max=" + std::to_string(2 + 64 + 4 * 2 * 1),
                                      "cpu.shares=2048"}));
  JailCgroups v2{2, "ember-test", {"memory", "pids", "cpu"}, {"/u"}, 2};
  LaunchSpec spec;
  spec.vm_id = "vm2";
  spec.vm_dir = vms_dir_ + "/vm2";
  std::filesystem::create_directories(spec.vm_dir);
  ASSERT_TRUE(MakeJailedView(vms_dir_, jail_dir_, kIds, nullptr, v2)->PrepareLaunch(config, nullptr, &spec).ok());
  EXPECT_EQ(CgroupSettings(spec.jailer_args),
            (std::vector<std::string>{"memory.max=" + std::to_string((256 + 128) << 20),
                                      "pids.max=74", "cpu.weight=200"}));
  // A host with no hierarchy for them: no limits asked for.
  LaunchSpec none;
  none.vm_id = "vm3";
  none.vm_dir = vms_dir_ + "/vm3";
  std::filesystem::create_directories(none.vm_dir);
  ASSERT_TRUE(Jailed()->PrepareLaunch(config, nullptr, &none).ok());
  EXPECT_TRUE(CgroupSettings(none.jailer_args).empty());
}

TEST(ApplyOverrides, AnOverrideOfADriveTheSnapshotLacksIsInvalidOnlyWhenTheConfigIsKnown) {
  v1::RestoreOverrides overrides;
  (*overrides.mutable_drive_path_on_host())["nope"] = "/x.img";
  v1::VmConfig config;
  absl::Status refused = ApplyOverrides(overrides, "overrides[0]", /*check=*/true, &config);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("overrides[0].drive_path_on_host"), std::string::npos);
  EXPECT_TRUE(ApplyOverrides(overrides, "overrides[0]", /*check=*/false, &config).ok());
}

}  // namespace
}  // namespace ember::emberd
