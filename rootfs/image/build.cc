#include "rootfs/image/build.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "rootfs/image/ext4_image.h"
#include "rootfs/image/image_config.h"
#include "rootfs/image/layer_reader.h"
#include "rootfs/image/oci_image.h"
#include "rootfs/image/staged_tree.h"
#include "rootfs/image/tree_scan.h"
#include "rootfs/image/work_dir.h"
#include "vmm/base/atomic_file.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::rootfs {
namespace {

// The directory ember-rootfs runs from, where build/bin keeps ember-init and ember-agent.
std::string SelfDirectory() {
  char path[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return ".";
  std::string self(path, static_cast<size_t>(n));
  return self.substr(0, self.rfind('/'));
}

// The guest program `flag` names, or `name` beside ember-rootfs; a regular file either way.
absl::StatusOr<std::string> GuestProgram(const std::string& given, const char* flag,
                                         const char* name) {
  std::string path = given.empty() ? SelfDirectory() + "/" + name : given;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (given.empty()) {
      return absl::InvalidArgumentError(std::string("no ") + name + " beside ember-rootfs (" +
                                        path + "); give " + flag + " PATH");
    }
    return absl::InvalidArgumentError(std::string(flag) + " " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(std::string(flag) + " " + path + " is not a regular file");
  }
  return path;
}

std::string RealDirectoryOf(const std::string& path) {
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  if (dir.empty()) dir = "/";
  char* real = ::realpath(dir.c_str(), nullptr);
  if (real == nullptr) return {};
  std::string result = real;
  ::free(real);
  return result;
}

// The source file, open for reading. "/dev/fd/N" or "/proc/self/fd/N" names an inherited fd,
// whose file is read through a duplicate of it, from its start, not opened again by that name:
// a builder running as a uid of its own (emberd's) may read the file it was handed but not open
// it again (the kernel checks the file's mode on a reopen through /proc).
absl::StatusOr<base::UniqueFd> OpenSourceFile(const std::string& source) {
  for (const std::string_view prefix : {"/dev/fd/", "/proc/self/fd/"}) {
    if (!source.starts_with(prefix)) continue;
    int inherited = -1;
    const char* end = source.data() + source.size();
    auto [stop, ec] = std::from_chars(source.data() + prefix.size(), end, inherited);
    if (ec != std::errc() || stop != end || inherited < 0) break;
    base::UniqueFd fd(::fcntl(inherited, F_DUPFD_CLOEXEC, 0));
    if (!fd) return absl::InvalidArgumentError("source " + source + ": " + std::strerror(errno));
    if (::lseek(fd.Get(), 0, SEEK_SET) != 0) {
      return absl::InvalidArgumentError("source " + source + ": not a seekable file");
    }
    return fd;
  }
  base::UniqueFd fd(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return absl::InvalidArgumentError("source " + source + ": " + std::strerror(errno));
  return fd;
}

absl::StatusOr<SourceKind> DecideKind(const Options& options) {
  struct stat st {};
  if (::stat(options.source.c_str(), &st) != 0) {
    return absl::InvalidArgumentError("source " + options.source + ": " + std::strerror(errno));
  }
  if (options.kind != SourceKind::kAuto) return options.kind;
  if (S_ISDIR(st.st_mode)) {
    // An OCI layout names itself with an oci-layout file (image-spec, image-layout.md).
    struct stat marker {};
    bool layout = ::stat((options.source + "/oci-layout").c_str(), &marker) == 0;
    return layout ? SourceKind::kOci : SourceKind::kDirectory;
  }
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd fd, OpenSourceFile(options.source));
  switch (ProbeArchive(fd.Get())) {
    case ArchiveKind::kOciLayout:
      return SourceKind::kOci;
    case ArchiveKind::kDockerArchive:
      // Staged as an export it would make a root file system of layer tarballs.
      return absl::InvalidArgumentError(
          "source " + options.source +
          " is a docker-archive, which ember-rootfs does not read: save the image with "
          "--format oci-archive (or pass --format export if it really is a root file system)");
    case ArchiveKind::kOther:
      break;
  }
  return SourceKind::kExport;
}

// The tree mke2fs -d copies, open; for a directory source, the directory itself.
struct Tree {
  std::string path;
  base::UniqueFd fd;
  std::vector<InodeFix> fixes;
};

absl::StatusOr<Tree> OpenDirectorySource(const Options& options) {
  Tree tree;
  tree.path = options.source;
  tree.fd.Reset(::open(options.source.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!tree.fd) {
    return absl::InvalidArgumentError("source " + options.source + ": " + std::strerror(errno));
  }
  // Inside the tree, the image and the scratch directory would be copied into themselves by
  // mke2fs -d.
  char* real = ::realpath(options.source.c_str(), nullptr);
  std::string source_real = real ? real : "";
  ::free(real);
  auto inside = [&](const std::string& dir) {
    return !source_real.empty() && (dir == source_real || dir.rfind(source_real + "/", 0) == 0);
  };
  if (inside(RealDirectoryOf(options.output))) {
    return absl::InvalidArgumentError("image " + options.output + " lies inside the source " +
                                      options.source);
  }
  if (!options.work_dir.empty() && inside(RealDirectoryOf(options.work_dir + "/."))) {
    return absl::InvalidArgumentError("--work-dir " + options.work_dir +
                                      " lies inside the source " + options.source);
  }
  return tree;
}

// An OCI layout to read blobs from: the source directory, or an OCI archive unpacked (with
// the same checks as any archive) into the work directory.
struct OciLayout {
  base::UniqueFd fd;
  std::optional<StagedTree> unpacked;
};

absl::StatusOr<OciLayout> OpenOciLayout(const std::string& source, const WorkDir& work,
                                        StagedBytes* budget) {
  OciLayout layout;
  struct stat st {};
  if (::stat(source.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    layout.fd.Reset(::open(source.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!layout.fd) {
      return absl::InvalidArgumentError("source " + source + ": " + std::strerror(errno));
    }
    return layout;
  }
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd fd, OpenSourceFile(source));
  EMBER_ASSIGN_OR_RETURN(StagedTree unpacked,
                         StagedTree::Create(work.fd(), work.path(), "oci", budget));
  EMBER_RETURN_IF_ERROR(ApplyLayer(fd.Get(), source, &unpacked));
  layout.fd.Reset(::dup(unpacked.fd()));
  if (!layout.fd) return base::ErrnoError("dup", unpacked.path());
  layout.unpacked = std::move(unpacked);
  return layout;
}

// The staged tree, its times set, as the tree mke2fs -d copies.
absl::StatusOr<Tree> FinishStaged(StagedTree staged) {
  EMBER_RETURN_IF_ERROR(staged.SetTimes());
  Tree tree;
  tree.path = staged.path();
  tree.fd.Reset(::dup(staged.fd()));
  if (!tree.fd) return base::ErrnoError("dup", staged.path());
  tree.fixes = staged.InodeFixes();
  return tree;
}

}  // namespace

absl::Status BuildRootfs(const Options& options) {
  EMBER_ASSIGN_OR_RETURN(std::string init, GuestProgram(options.init, "--init", "ember-init"));
  EMBER_ASSIGN_OR_RETURN(std::string agent, GuestProgram(options.agent, "--agent", "ember-agent"));
  EMBER_ASSIGN_OR_RETURN(SourceKind kind, DecideKind(options));
  if (RealDirectoryOf(options.output).empty()) {
    return absl::InvalidArgumentError("image " + options.output + ": its directory does not exist");
  }
  // Beside the image unless told: the staged tree then shares the image's file system, and
  // its space.
  std::string work_prefix = options.work_dir.empty() ? options.output + ".ember-rootfs-"
                                                     : options.work_dir + "/ember-rootfs-";
  EMBER_ASSIGN_OR_RETURN(WorkDir work, WorkDir::Create(work_prefix));
  // Everything staged counts, the OCI archive's own unpacked blobs too.
  StagedBytes budget(options.max_bytes);

  ImageConfig config;
  Tree tree;
  switch (kind) {
    case SourceKind::kDirectory: {
      EMBER_ASSIGN_OR_RETURN(tree, OpenDirectorySource(options));
      break;
    }
    case SourceKind::kExport: {
      EMBER_ASSIGN_OR_RETURN(base::UniqueFd fd, OpenSourceFile(options.source));
      EMBER_ASSIGN_OR_RETURN(StagedTree staged,
                             StagedTree::Create(work.fd(), work.path(), "tree", &budget));
      EMBER_RETURN_IF_ERROR(ApplyLayer(fd.Get(), options.source, &staged));
      EMBER_ASSIGN_OR_RETURN(tree, FinishStaged(std::move(staged)));
      break;
    }
    case SourceKind::kOci:
    case SourceKind::kAuto: {
      EMBER_ASSIGN_OR_RETURN(OciLayout layout, OpenOciLayout(options.source, work, &budget));
      EMBER_ASSIGN_OR_RETURN(OciImage image, ReadOciLayout(layout.fd.Get(), options.source));
      config = image.config;
      EMBER_ASSIGN_OR_RETURN(StagedTree staged,
                             StagedTree::Create(work.fd(), work.path(), "tree", &budget));
      EMBER_RETURN_IF_ERROR(ApplyOciLayers(layout.fd.Get(), image, &staged));
      EMBER_ASSIGN_OR_RETURN(tree, FinishStaged(std::move(staged)));
      break;
    }
  }

  ImagePlan plan;
  plan.tree = tree.path;
  EMBER_ASSIGN_OR_RETURN(plan.stats, ScanTree(tree.fd.Get(), tree.path));
  // A directory source was never staged; its blocks in use are what the image copies.
  if (options.max_bytes && plan.stats.data_bytes > *options.max_bytes) {
    return absl::InvalidArgumentError(
        "source " + options.source + " takes " + std::to_string(plan.stats.data_bytes) +
        " bytes, more than --max-bytes " + std::to_string(*options.max_bytes));
  }
  plan.size_bytes = options.size_bytes;
  plan.fixes = std::move(tree.fixes);
  std::string config_path = work.path() + "/image-config.pb";
  EMBER_RETURN_IF_ERROR(base::WriteFileAtomically(config_path, SerializeImageConfig(config), 0644,
                                                  base::AtomicFile::Durability::kRenameOnly));
  plan.guest_files = {{"sbin/ember-init", init, 0755},
                      {"sbin/ember-agent", agent, 0755},
                      {kImageConfigPath, config_path, 0644}};
  // ember-init mounts these; on a read-only root it cannot make them.
  plan.mount_points = {{"proc", 0555}, {"sys", 0555}, {"dev", 0755}, {"run", 0755}, {"tmp", 01777}};
  return BuildImage(plan, tree.fd.Get(), options.output);
}

}  // namespace ember::rootfs
