#include "snapshot/memory_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

#include "snapshot/snapshot_id.h"
#include "vmm/base/atomic_file.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::snapshot {
namespace {

constexpr std::uint64_t kPageSize = 4096;

// A data range SEEK_DATA reported that pread then found past the end: the file shrank under us.
absl::Status EndedEarly(const std::string& path, std::uint64_t offset) {
  return absl::InvalidArgumentError("memory file " + path + " ended at offset " +
                                    std::to_string(offset) + " while being read");
}

bool IsZeroPage(const std::uint8_t* page) {
  // Compare in words: this runs over every page of guest memory.
  const auto* words = reinterpret_cast<const std::uint64_t*>(page);  // page-aligned
  for (std::size_t i = 0; i < kPageSize / sizeof(std::uint64_t); ++i) {
    if (words[i] != 0) return false;
  }
  return true;
}

// A new memory file for `memory`, all holes: it replaces `path` only once complete, so clones
// mapping the old file MAP_PRIVATE — this VM itself, when restored from `path` — keep reading
// the old inode, and a crash leaves the old file whole.
absl::StatusOr<base::AtomicFile> CreateMemoryFile(const base::GuestMemory& memory,
                                                  const std::string& path, int dir_fd) {
  EMBER_ASSIGN_OR_RETURN(base::AtomicFile file, base::AtomicFile::Create(path, 0600, dir_fd));
  if (::ftruncate(file.fd(), static_cast<off_t>(memory.total_size())) != 0) {
    return base::ErrnoError("ftruncate", file.temp_path());
  }
  return file;
}

absl::Status WriteAll(int fd, const std::uint8_t* data, std::uint64_t size, std::uint64_t offset,
                      const std::string& path) {
  while (size > 0) {
    ssize_t n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return base::ErrnoError("pwrite", path);
    if (n == 0) return base::ErrnoError(EIO, "pwrite (no progress)", path);
    data += n;
    size -= static_cast<std::uint64_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
  return absl::OkStatus();
}

// The trailer after `memory_size` bytes of memory: the file's last bytes.
absl::Status WriteTrailer(int fd, std::uint64_t memory_size, const std::string& id,
                          const std::string& path) {
  std::string trailer = EncodeMemoryTrailer(memory_size, id);
  // The trailer's chars as the bytes pwrite takes.
  return WriteAll(fd, reinterpret_cast<const std::uint8_t*>(trailer.data()), trailer.size(),
                  memory_size, path);
}

// Writes the non-zero pages of [begin, end) of one region, coalescing runs.
absl::Status WriteRange(int fd, const base::GuestRegion& region, std::uint64_t begin,
                        std::uint64_t end, const std::string& path) {
  std::uint64_t run_start = end;
  for (std::uint64_t off = begin; off <= end; off += kPageSize) {
    bool data = off < end && !IsZeroPage(region.host + off);
    if (data && run_start == end) run_start = off;
    if (!data && run_start != end) {
      EMBER_RETURN_IF_ERROR(WriteAll(fd, region.host + run_start, off - run_start,
                                     region.file_offset + run_start, path));
      run_start = end;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<WrittenMemoryFile> WriteMemoryFileUncommitted(const base::GuestMemory& memory,
                                                             const std::string& path,
                                                             const std::string& id, int dir_fd) {
  EMBER_ASSIGN_OR_RETURN(base::AtomicFile file, CreateMemoryFile(memory, path, dir_fd));
  std::vector<v1::MemoryRegion> layout;
  for (const base::GuestRegion& region : memory.regions()) {
    if (!memory.fd_is_current()) {
      // A private file mapping: its changes are not in the file, so scan everything.
      EMBER_RETURN_IF_ERROR(WriteRange(file.fd(), region, 0, region.size, path));
    }
    // In a memfd, holes are pages the guest never touched: skip them unread.
    std::uint64_t pos = memory.fd_is_current() ? 0 : region.size;
    while (pos < region.size) {
      off_t data = ::lseek(memory.fd(), static_cast<off_t>(region.file_offset + pos), SEEK_DATA);
      if (data < 0) break;  // ENXIO: no data beyond this point
      std::uint64_t begin = static_cast<std::uint64_t>(data) - region.file_offset;
      if (begin >= region.size) break;
      off_t hole = ::lseek(memory.fd(), data, SEEK_HOLE);
      std::uint64_t end = std::min(region.size, static_cast<std::uint64_t>(hole) - region.file_offset);
      EMBER_RETURN_IF_ERROR(WriteRange(file.fd(), region, begin, end, path));
      pos = end;
    }
    v1::MemoryRegion entry;
    entry.set_guest_start(region.guest_start);
    entry.set_size(region.size);
    entry.set_file_offset(region.file_offset);
    layout.push_back(entry);
  }
  EMBER_RETURN_IF_ERROR(WriteTrailer(file.fd(), memory.total_size(), id, path));
  return WrittenMemoryFile{std::move(file), std::move(layout)};
}

absl::StatusOr<std::vector<v1::MemoryRegion>> WriteMemoryFile(const base::GuestMemory& memory,
                                                              const std::string& path,
                                                              const std::string& id) {
  EMBER_ASSIGN_OR_RETURN(WrittenMemoryFile written, WriteMemoryFileUncommitted(memory, path, id));
  EMBER_RETURN_IF_ERROR(written.file.Commit());
  return std::move(written.layout);
}

namespace {

std::vector<v1::MemoryRegion> Layout(const base::GuestMemory& memory) {
  std::vector<v1::MemoryRegion> layout;
  for (const base::GuestRegion& region : memory.regions()) {
    v1::MemoryRegion entry;
    entry.set_guest_start(region.guest_start);
    entry.set_size(region.size);
    entry.set_file_offset(region.file_offset);
    layout.push_back(entry);
  }
  return layout;
}

// Calls `visit(offset, length)` for each data (non-hole) range of the file's first
// `memory_size` bytes, its memory (the trailer after them is not memory).
template <typename Visit>
absl::Status ForEachDataRange(int fd, std::uint64_t memory_size, const std::string& path,
                              Visit visit) {
  auto end = static_cast<off_t>(memory_size);
  off_t pos = 0;
  while (pos < end) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0 || data >= end) break;  // ENXIO: only a hole remains
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return base::ErrnoError("lseek(SEEK_HOLE)", path);
    hole = std::min(hole, end);
    EMBER_RETURN_IF_ERROR(visit(static_cast<std::uint64_t>(data),
                                static_cast<std::uint64_t>(hole - data)));
    pos = hole;
  }
  return absl::OkStatus();
}

// The host bytes of backing-layout offset `offset` (a page inside one region).
std::uint8_t* HostAtOffset(const base::GuestMemory& memory, std::uint64_t offset,
                           std::uint64_t* room) {
  for (const base::GuestRegion& region : memory.regions()) {
    if (offset >= region.file_offset && offset < region.file_offset + region.size) {
      *room = region.file_offset + region.size - offset;
      return region.host + (offset - region.file_offset);
    }
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<WrittenMemoryFile> WriteDiffMemoryFileUncommitted(
    const base::GuestMemory& memory, std::span<const std::uint64_t> dirty,
    const std::string& path, const std::string& id, int dir_fd) {
  EMBER_ASSIGN_OR_RETURN(base::AtomicFile file, CreateMemoryFile(memory, path, dir_fd));
  std::uint64_t pages = memory.page_count();
  for (std::uint64_t page = 0; page < pages;) {
    if (!(dirty[page / 64] >> (page % 64) & 1)) {
      ++page;
      continue;
    }
    std::uint64_t run = page;
    while (run < pages && (dirty[run / 64] >> (run % 64) & 1)) ++run;
    // A run may cross a region boundary; write it region by region.
    for (std::uint64_t off = page * kPageSize; off < run * kPageSize;) {
      std::uint64_t room = 0;
      std::uint8_t* host = HostAtOffset(memory, off, &room);
      if (host == nullptr) return absl::InternalError("dirty page outside guest memory");
      std::uint64_t len = std::min(room, run * kPageSize - off);
      EMBER_RETURN_IF_ERROR(WriteAll(file.fd(), host, len, off, path));
      off += len;
    }
    page = run;
  }
  EMBER_RETURN_IF_ERROR(WriteTrailer(file.fd(), memory.total_size(), id, path));
  return WrittenMemoryFile{std::move(file), Layout(memory)};
}

absl::StatusOr<std::vector<v1::MemoryRegion>> WriteDiffMemoryFile(
    const base::GuestMemory& memory, std::span<const std::uint64_t> dirty,
    const std::string& path, const std::string& id) {
  EMBER_ASSIGN_OR_RETURN(WrittenMemoryFile written,
                         WriteDiffMemoryFileUncommitted(memory, dirty, path, id));
  EMBER_RETURN_IF_ERROR(written.file.Commit());
  return std::move(written.layout);
}

absl::Status ApplyDiffMemoryFile(const base::GuestMemory& memory, const MemoryFileRef& file) {
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd fd, OpenMemoryFile(file, memory.total_size()));
  const std::string& path = file.path;
  return ForEachDataRange(fd.Get(), memory.total_size(), path, [&](std::uint64_t offset,
                                                                  std::uint64_t length) {
    while (length > 0) {
      std::uint64_t room = 0;
      std::uint8_t* host = HostAtOffset(memory, offset, &room);
      if (host == nullptr) {
        return absl::InvalidArgumentError("diff memory file " + path +
                                          " has data beyond guest memory");
      }
      std::uint64_t len = std::min(room, length);
      ssize_t n = ::pread(fd.Get(), host, len, static_cast<off_t>(offset));
      if (n < 0) return base::ErrnoError("pread", path);
      if (n == 0) return EndedEarly(path, offset);
      offset += static_cast<std::uint64_t>(n);
      length -= static_cast<std::uint64_t>(n);
    }
    return absl::OkStatus();
  });
}

absl::Status CheckOutputIsNoInput(const std::string& output,
                                  const std::vector<std::string>& inputs) {
  struct stat out_st {};
  bool out_exists = ::stat(output.c_str(), &out_st) == 0;
  for (const std::string& input : inputs) {
    struct stat in_st {};
    bool in_exists = ::stat(input.c_str(), &in_st) == 0;
    bool same = false;
    if (out_exists && in_exists) {
      same = out_st.st_dev == in_st.st_dev && out_st.st_ino == in_st.st_ino;
    } else {
      // Lexically only: ember-vmm checks its diffs here, and its seccomp filter has no room
      // for the system calls that resolving a path would make.
      same = std::filesystem::path(output).lexically_normal() ==
             std::filesystem::path(input).lexically_normal();
    }
    if (same) {
      return absl::InvalidArgumentError("output " + output + " is the input " + input +
                                        " itself; write to a new file (the inputs may still be "
                                        "in use)");
    }
  }
  return absl::OkStatus();
}

absl::Status MergeMemoryFiles(const std::vector<MemoryFileRef>& chain, std::uint64_t memory_size,
                              const std::string& out_path, const std::string& out_id) {
  if (chain.empty()) return absl::InvalidArgumentError("nothing to merge");
  std::vector<std::string> inputs;
  for (const MemoryFileRef& file : chain) inputs.push_back(file.path);
  EMBER_RETURN_IF_ERROR(CheckOutputIsNoInput(out_path, inputs));
  // Every input checked before the output exists.
  std::vector<base::UniqueFd> files;
  for (const MemoryFileRef& file : chain) {
    EMBER_ASSIGN_OR_RETURN(files.emplace_back(), OpenMemoryFile(file, memory_size));
  }
  EMBER_ASSIGN_OR_RETURN(base::AtomicFile out, base::AtomicFile::Create(out_path));
  if (::ftruncate(out.fd(), static_cast<off_t>(memory_size)) != 0) {
    return base::ErrnoError("ftruncate", out_path);
  }
  std::vector<std::uint8_t> buffer(1 << 20);
  for (std::size_t i = 0; i < chain.size(); ++i) {
    const base::UniqueFd& in = files[i];
    const std::string& path = chain[i].path;
    EMBER_RETURN_IF_ERROR(ForEachDataRange(in.Get(), memory_size, path, [&](std::uint64_t offset,
                                                                            std::uint64_t length) {
      while (length > 0) {
        std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(length, buffer.size()));
        ssize_t n = ::pread(in.Get(), buffer.data(), chunk, static_cast<off_t>(offset));
        if (n < 0) return base::ErrnoError("pread", path);
        if (n == 0) return EndedEarly(path, offset);
        EMBER_RETURN_IF_ERROR(WriteAll(out.fd(), buffer.data(), static_cast<std::uint64_t>(n),
                                       offset, out_path));
        offset += static_cast<std::uint64_t>(n);
        length -= static_cast<std::uint64_t>(n);
      }
      return absl::OkStatus();
    }));
  }
  EMBER_RETURN_IF_ERROR(WriteTrailer(out.fd(), memory_size, out_id, out_path));
  return out.Commit();
}

std::string EncodeMemoryTrailer(std::uint64_t memory_size, const std::string& id) {
  std::string out(kMemoryTrailerMagic, sizeof(kMemoryTrailerMagic));
  PutLittleEndian<std::uint32_t>(out, kMemoryTrailerVersion);
  PutLittleEndian<std::uint32_t>(out, 0);
  PutLittleEndian<std::uint64_t>(out, memory_size);
  out += id;
  out.resize(kMemoryTrailerSize - kCrcSize, '\0');  // an id of the wrong size cannot overrun
  PutLittleEndian<std::uint64_t>(out, Crc64(out, out.size()));
  return out;
}

std::vector<MemoryFileRef> MemoryChain(const v1::SnapshotState& state,
                                       const MemoryFileRef& memory, const HandedFiles& bases) {
  std::vector<MemoryFileRef> chain;
  for (int i = 0; i < state.base_memory_files_size(); ++i) {
    // ReadStateFile checked there is an id for each.
    const std::string& name = state.base_memory_files(i);
    auto handed = bases.find(name);
    if (handed == bases.end()) {
      chain.push_back({name, state.base_memory_ids(i), Symlinks::kRefuse});
    } else {
      // The restorer's own file (a /proc/self/fd link): followed, as its own memory file is.
      chain.push_back({name, state.base_memory_ids(i), Symlinks::kFollow, handed->second});
    }
  }
  chain.push_back({memory.path, state.snapshot_id(), Symlinks::kFollow, memory.file});
  return chain;
}

std::vector<MemoryFileRef> MemoryChain(const v1::SnapshotState& state,
                                       const std::string& memory_path) {
  return MemoryChain(state, MemoryFileRef{memory_path, "", Symlinks::kFollow});
}

namespace {

// What is wrong with `trailer`, the last bytes of a memory file that must hold `memory_size`
// bytes of memory and carry `id`; OK when nothing is. Continues "snapshot memory file PATH ".
absl::Status CheckTrailer(const std::string& trailer, std::uint64_t memory_size,
                          const std::string& id) {
  if (std::memcmp(trailer.data(), kMemoryTrailerMagic, sizeof(kMemoryTrailerMagic)) != 0) {
    return absl::InvalidArgumentError(
        "does not end in an Ember memory-file trailer (not a memory file, or one of an older "
        "Ember, which had no snapshot id: take the snapshot again)");
  }
  if (auto version = GetLittleEndian<std::uint32_t>(trailer, 8); version != kMemoryTrailerVersion) {
    return absl::InvalidArgumentError("has trailer version " + std::to_string(version) +
                                      " is not supported (this Ember reads version " +
                                      std::to_string(kMemoryTrailerVersion) + ")");
  }
  std::size_t crc_offset = kMemoryTrailerSize - kCrcSize;
  if (GetLittleEndian<std::uint64_t>(trailer, crc_offset) != Crc64(trailer, crc_offset)) {
    return absl::InvalidArgumentError("has a CRC mismatch in its trailer: the file is corrupted");
  }
  if (GetLittleEndian<std::uint32_t>(trailer, 12) != 0) {
    return absl::InvalidArgumentError("has a reserved word other than 0 in its trailer");
  }
  if (auto recorded = GetLittleEndian<std::uint64_t>(trailer, 16); recorded != memory_size) {
    return absl::InvalidArgumentError(
        "records " + std::to_string(recorded) + " bytes of memory in its trailer; the state file " +
        "expects " + std::to_string(memory_size));
  }
  std::string file_id = trailer.substr(24, kSnapshotIdSize);
  if (file_id != id) {
    return absl::InvalidArgumentError(
        "belongs to snapshot " + SnapshotIdText(file_id) + ", not to snapshot " +
        SnapshotIdText(id) + " that the state file names: the two files are of different "
        "snapshots (was one of them replaced?)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<base::UniqueFd> OpenMemoryFile(const MemoryFileRef& file,
                                              std::uint64_t memory_size) {
  const std::string what = "snapshot memory file";
  EMBER_ASSIGN_OR_RETURN(OpenedFile opened,
                         file.file.empty() ? OpenSnapshotFile(file.path, what, file.symlinks)
                                           : OpenSnapshotFile(file.file, what + " " + file.path +
                                                                             " (handed over as)"));
  if (opened.size != memory_size + kMemoryTrailerSize) {
    return absl::InvalidArgumentError(
        what + " " + file.path + " is " + std::to_string(opened.size) + " bytes; the state " +
        "file expects " + std::to_string(memory_size) + " of memory and a " +
        std::to_string(kMemoryTrailerSize) + "-byte trailer" +
        (opened.size == memory_size ? " (it has no trailer: an older Ember's memory file, "
                                      "without a snapshot id; take the snapshot again)"
                                    : ""));
  }
  std::string trailer(kMemoryTrailerSize, '\0');
  ssize_t n = ::pread(opened.fd.Get(), trailer.data(), trailer.size(),
                      static_cast<off_t>(memory_size));
  if (n < 0) return base::ErrnoError("read the trailer of " + what, file.path);
  if (static_cast<std::size_t>(n) != trailer.size()) return EndedEarly(file.path, memory_size);
  if (absl::Status status = CheckTrailer(trailer, memory_size, file.id);
      !status.ok()) {
    return absl::InvalidArgumentError(what + " " + file.path + " " +
                                      std::string(status.message()));
  }
  return std::move(opened.fd);
}

absl::Status CheckMemoryFile(const MemoryFileRef& file, std::uint64_t memory_size) {
  return OpenMemoryFile(file, memory_size).status();
}

}  // namespace ember::snapshot
