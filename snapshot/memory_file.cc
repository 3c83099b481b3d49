#include "snapshot/memory_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

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
                                                  const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(base::AtomicFile file, base::AtomicFile::Create(path));
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

absl::StatusOr<std::vector<v1::MemoryRegion>> WriteMemoryFile(const base::GuestMemory& memory,
                                                              const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(base::AtomicFile file, CreateMemoryFile(memory, path));
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
  EMBER_RETURN_IF_ERROR(file.Commit());
  return layout;
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

// Calls `visit(offset, length)` for each data (non-hole) range of the file.
template <typename Visit>
absl::Status ForEachDataRange(int fd, const std::string& path, Visit visit) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return base::ErrnoError("fstat", path);
  off_t pos = 0;
  while (pos < st.st_size) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) break;  // ENXIO: only a hole remains
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return base::ErrnoError("lseek(SEEK_HOLE)", path);
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

absl::StatusOr<std::vector<v1::MemoryRegion>> WriteDiffMemoryFile(
    const base::GuestMemory& memory, std::span<const std::uint64_t> dirty,
    const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(base::AtomicFile file, CreateMemoryFile(memory, path));
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
  EMBER_RETURN_IF_ERROR(file.Commit());
  return Layout(memory);
}

absl::Status ApplyDiffMemoryFile(const base::GuestMemory& memory, const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return base::ErrnoError("open", path);
  return ForEachDataRange(fd.Get(), path, [&](std::uint64_t offset, std::uint64_t length) {
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

absl::Status MergeMemoryFiles(const std::vector<std::string>& chain, const std::string& out_path) {
  if (chain.empty()) return absl::InvalidArgumentError("nothing to merge");
  EMBER_RETURN_IF_ERROR(CheckOutputIsNoInput(out_path, chain));
  EMBER_ASSIGN_OR_RETURN(base::AtomicFile out, base::AtomicFile::Create(out_path));
  std::vector<std::uint8_t> buffer(1 << 20);
  for (const std::string& path : chain) {
    base::UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) return base::ErrnoError("open", path);
    struct stat st {};
    if (::fstat(in.Get(), &st) != 0) return base::ErrnoError("fstat", path);
    if (::ftruncate(out.fd(), st.st_size) != 0) return base::ErrnoError("ftruncate", out_path);
    EMBER_RETURN_IF_ERROR(ForEachDataRange(in.Get(), path, [&](std::uint64_t offset,
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
  return out.Commit();
}

absl::Status CheckMemoryFile(const std::string& path, std::uint64_t expected_size) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::InvalidArgumentError(
        std::string(base::ErrnoError("cannot open snapshot memory file", path).message()));
  }
  if (static_cast<std::uint64_t>(st.st_size) != expected_size) {
    return absl::InvalidArgumentError("snapshot memory file " + path + " is " +
                                      std::to_string(st.st_size) + " bytes; the state file " +
                                      "expects " + std::to_string(expected_size));
  }
  return absl::OkStatus();
}

}  // namespace ember::snapshot
