#include "rootfs/image/layer_reader.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "rootfs/image/interrupt.h"
#include "rootfs/image/sha256.h"
#include "vmm/base/status.h"

namespace ember::rootfs {
namespace {

// OCI's whiteout names (image-spec, layer.md).
constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ArchivePtr = std::unique_ptr<archive, ArchiveDeleter>;

absl::Status Corrupt(const std::string& display, archive* a) {
  const char* why = archive_error_string(a);
  return absl::DataLossError(display +
                             " is corrupt or truncated: " + (why ? why : "unreadable archive"));
}

// Copies the current entry's data into `fd`, holes kept as holes. Its declared size counts
// against the tree's budget before anything is written, and any data past it as it comes.
absl::Status CopyData(archive* a, int fd, int64_t size, const std::string& display,
                      const std::string& path, StagedTree* tree) {
  if (size < 0) return absl::DataLossError(display + ": entry /" + path + " has a negative size");
  uint64_t charged = static_cast<uint64_t>(size);
  EMBER_RETURN_IF_ERROR(tree->Charge(charged, path));
  for (;;) {
    const void* block = nullptr;
    size_t length = 0;
    la_int64_t offset = 0;
    int r = archive_read_data_block(a, &block, &length, &offset);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return Corrupt(display, a);
    if (offset < 0) return Corrupt(display, a);
    if (const uint64_t end = static_cast<uint64_t>(offset) + length; end > charged) {
      EMBER_RETURN_IF_ERROR(tree->Charge(end - charged, path));
      charged = end;
    }
    const char* bytes = static_cast<const char*>(block);
    while (length > 0) {
      ssize_t n = ::pwrite(fd, bytes, length, offset);
      if (n < 0) {
        if (errno == EINTR) continue;
        return base::ErrnoError("write", "/" + path);
      }
      bytes += n;
      length -= static_cast<size_t>(n);
      offset += n;
    }
  }
  if (::ftruncate(fd, size) != 0) return base::ErrnoError("ftruncate", "/" + path);
  return absl::OkStatus();
}

absl::Status ApplyEntry(archive* a, archive_entry* entry, const std::string& display,
                        StagedTree* tree) {
  const char* raw_name = archive_entry_pathname(entry);
  if (raw_name == nullptr) return absl::DataLossError(display + ": an entry without a name");
  absl::StatusOr<std::string> path = NormalizePath(raw_name);
  if (!path.ok())
    return absl::InvalidArgumentError(display + ": " + std::string(path.status().message()));

  EMBER_RETURN_IF_ERROR(tree->Charge(StagedBytes::kEntryBytes, *path));
  std::string base = path->substr(path->rfind('/') == std::string::npos ? 0 : path->rfind('/') + 1);
  std::string dir =
      base.size() == path->size() ? "" : path->substr(0, path->size() - base.size() - 1);
  if (base == kOpaqueMarker) return tree->MakeOpaque(dir);
  if (base.rfind(kWhiteoutPrefix, 0) == 0) {
    std::string hidden = base.substr(kWhiteoutPrefix.size());
    // Other ".wh..wh." names are aufs's own bookkeeping (hard-link directories), not files.
    if (hidden.rfind(kWhiteoutPrefix, 0) == 0 || hidden.empty()) return absl::OkStatus();
    return tree->Whiteout(dir.empty() ? hidden : dir + "/" + hidden);
  }

  EntryMeta meta;
  meta.uid = static_cast<uint32_t>(archive_entry_uid(entry));
  meta.gid = static_cast<uint32_t>(archive_entry_gid(entry));
  meta.mode = static_cast<uint32_t>(archive_entry_mode(entry));
  meta.mtime = archive_entry_mtime(entry);
  archive_entry_xattr_reset(entry);
  const char* xattr_name = nullptr;
  const void* xattr_value = nullptr;
  size_t xattr_size = 0;
  while (archive_entry_xattr_next(entry, &xattr_name, &xattr_value, &xattr_size) == ARCHIVE_OK) {
    std::string name = xattr_name ? xattr_name : "";
    if (name.empty() || name.find('\n') != std::string::npos) {
      return absl::DataLossError(display + ": entry /" + *path + " has a malformed xattr name");
    }
    meta.xattrs.emplace_back(name, std::string(static_cast<const char*>(xattr_value), xattr_size));
  }

  if (const char* target = archive_entry_hardlink(entry)) {
    absl::StatusOr<std::string> target_path = NormalizePath(target);
    if (!target_path.ok()) {
      return absl::InvalidArgumentError(display + ": hard link /" + *path + ": " +
                                        std::string(target_path.status().message()));
    }
    return tree->AddHardLink(*path, *target_path);
  }
  switch (archive_entry_filetype(entry)) {
    case AE_IFDIR:
      return tree->AddDirectory(*path, meta);
    case AE_IFREG: {
      EMBER_ASSIGN_OR_RETURN(base::UniqueFd file, tree->AddFile(*path, meta));
      return CopyData(a, file.Get(), archive_entry_size(entry), display, *path, tree);
    }
    case AE_IFLNK: {
      const char* target = archive_entry_symlink(entry);
      if (target == nullptr || *target == '\0') {
        return absl::DataLossError(display + ": symlink /" + *path + " without a target");
      }
      return tree->AddSymlink(*path, target, meta);
    }
    case AE_IFIFO:
      return tree->AddFifo(*path, meta);
    case AE_IFCHR:
    case AE_IFBLK:
      return absl::InvalidArgumentError(display + ": device node /" + *path +
                                        ": an image carries none (the guest's devtmpfs does)");
    case AE_IFSOCK:
      return absl::OkStatus();  // as mke2fs -d: a socket is made by whoever listens
    default:
      return absl::DataLossError(display + ": entry /" + *path + " of an unknown type");
  }
}

// libarchive's reader of an fd, hashing what it hands over.
struct Source {
  int fd = -1;
  bool hash = false;
  Sha256 sha;
  char buffer[256 * 1024];
};

la_ssize_t ReadSource(archive* a, void* data, const void** block) {
  auto* source = static_cast<Source*>(data);
  for (;;) {
    ssize_t n = ::read(source->fd, source->buffer, sizeof(source->buffer));
    if (n < 0 && errno == EINTR && InterruptSignal() == 0) continue;
    if (n < 0) {
      archive_set_error(a, errno, "read failed: %s", std::strerror(errno));
      return -1;
    }
    if (source->hash) {
      source->sha.Update(source->buffer, static_cast<size_t>(n));
    }
    *block = source->buffer;
    return n;
  }
}

// A reader of `source`: tar only (ustar, pax, GNU), compressed the ways container tools
// compress layers; no other format, and no external decompressor programs.
absl::StatusOr<ArchivePtr> OpenReader(Source* source, const std::string& display) {
  ArchivePtr a(archive_read_new());
  if (!a) return absl::ResourceExhaustedError("archive_read_new failed");
  archive_read_support_format_tar(a.get());
  archive_read_support_filter_gzip(a.get());
  archive_read_support_filter_zstd(a.get());
  if (archive_read_open(a.get(), source, nullptr, ReadSource, nullptr) != ARCHIVE_OK) {
    return Corrupt(display, a.get());
  }
  return a;
}

}  // namespace

absl::Status ApplyLayer(int fd, const std::string& display, StagedTree* tree, std::string* sha256) {
  auto source = std::make_unique<Source>();
  source->fd = fd;
  source->hash = sha256 != nullptr;
  EMBER_ASSIGN_OR_RETURN(ArchivePtr a, OpenReader(source.get(), display));
  tree->BeginLayer();
  for (;;) {
    archive_entry* entry = nullptr;
    int r = archive_read_next_header(a.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN || r == ARCHIVE_RETRY) return Corrupt(display, a.get());
    EMBER_RETURN_IF_ERROR(CheckInterrupt());
    EMBER_RETURN_IF_ERROR(ApplyEntry(a.get(), entry, display, tree));
  }
  if (sha256 != nullptr) {
    // What follows the end-of-archive blocks counts too.
    const void* block = nullptr;
    while (ReadSource(a.get(), source.get(), &block) > 0) {
    }
    *sha256 = source->sha.HexDigest();
  }
  return absl::OkStatus();
}

ArchiveKind ProbeArchive(int fd) {
  auto source = std::make_unique<Source>();
  source->fd = fd;
  absl::StatusOr<ArchivePtr> reader = OpenReader(source.get(), "");
  if (!reader.ok()) return ArchiveKind::kOther;
  archive* a = reader->get();
  archive_entry* entry = nullptr;
  bool manifest = false;
  bool repositories = false;
  while (archive_read_next_header(a, &entry) == ARCHIVE_OK) {
    const char* name = archive_entry_pathname(entry);
    absl::StatusOr<std::string> path = NormalizePath(name ? name : "");
    if (path.ok() && *path == "oci-layout") return ArchiveKind::kOciLayout;
    if (path.ok() && *path == "manifest.json") manifest = true;
    if (path.ok() && *path == "repositories") repositories = true;
    archive_read_data_skip(a);
  }
  return manifest && repositories ? ArchiveKind::kDockerArchive : ArchiveKind::kOther;
}

}  // namespace ember::rootfs
