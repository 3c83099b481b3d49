#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "snapshot/memory_file.h"
#include "snapshot/working_set.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/guest_memory.h"
#include "vmm/base/mmap_region.h"
#include "vmm/base/unique_fd.h"

namespace ember::snapshot {

// A new userfaultfd (O_CLOEXEC | O_NONBLOCK), through the system call (needs CAP_SYS_PTRACE for
// faults KVM takes in kernel mode, unless vm.unprivileged_userfaultfd is 1) or else
// /dev/userfaultfd (access to the node is the permission). UFFDIO_API is the caller's.
[[nodiscard]] absl::StatusOr<base::UniqueFd> OpenUserfaultfd();

// Serves a restored guest's memory from a snapshot memory file through userfaultfd (MISSING
// mode): the guest memory is anonymous and empty, and the first touch of each page, by a vCPU
// (KVM reaches it through get_user_pages, the vCPU blocking until served) or by the VMM,
// becomes a fault this server answers with UFFDIO_COPY from the file, or UFFDIO_ZEROPAGE for
// a hole of the sparse file (SEEK_DATA/SEEK_HOLE say which pages are holes).
//
// It runs as a thread of ember-vmm rather than a separate process: a fault is then answered
// without any IPC hop (the copy source is the file mapped in our own address space), the
// server lives and dies with the VM it serves, and it gets its own seccomp allowlist like every
// other ember-vmm thread. A separate handler process (Firecracker's model) pays off when a
// platform wants to serve memory from elsewhere (a network, a shared cache); the uffd could be
// handed over a Unix socket then, and nothing in this class's interface would change.
//
// It records which pages it served (the working set) and can load a recorded set in bulk,
// before the vCPUs start, with one UFFDIO_COPY per coalesced run.
//
// Owned by the VMM; must outlive every user of the guest memory it serves (stop the vCPUs
// first), and `memory` must outlive it.
class UffdPageServer {
 public:
  // Registers every region of `memory` (anonymous memory from GuestMemory::CreateAnonymous,
  // laid out like the memory file) with a new userfaultfd and maps the memory file
  // `memory_file` (checked as OpenMemoryFile checks it) read-only as the source.
  // `snapshot_identity` is bytes unique to the snapshot (e.g. its encoded state) that go into
  // the fingerprint a working set is checked against. Nothing is served until Start().
  // InvalidArgument for an unusable memory file; other errors are the host's.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<UffdPageServer>> Create(
      const base::GuestMemory& memory, const MemoryFileRef& memory_file,
      const std::string& snapshot_identity);
  ~UffdPageServer();
  UffdPageServer(const UffdPageServer&) = delete;
  UffdPageServer& operator=(const UffdPageServer&) = delete;

  // What a working set recorded against this memory file must carry.
  [[nodiscard]] std::uint64_t memory_size() const { return file_map_.size(); }
  [[nodiscard]] std::uint64_t fingerprint() const { return fingerprint_; }

  // Loads every page of `set` (already checked against memory_size()/fingerprint()) into guest
  // memory, on the calling thread. Call before Start() and before anything touches the memory.
  [[nodiscard]] absl::Status Prefetch(const WorkingSet& set);

  // Starts the serving thread, which first runs `on_thread_start` (installs its seccomp
  // filter); if that fails the thread logs it and aborts, as no fault could be served safely.
  [[nodiscard]] absl::Status Start(std::function<absl::Status()> on_thread_start);

  // Stops and joins the serving thread. Nothing may touch unserved guest memory afterwards.
  // Idempotent; the destructor calls it.
  void Stop();

  // The pages served by faults so far (not those prefetched), as a working set. Any thread,
  // any time: the VMM writes it out when the VM ends, while the server still runs.
  [[nodiscard]] WorkingSet Recorded() const;

 private:
  UffdPageServer() = default;
  void Serve();
  void ServeFault(std::uint64_t address);
  // Copies (or zeroes, for holes) pages [first, first+count) of the file into guest memory.
  [[nodiscard]] absl::Status Fill(std::uint64_t first_page, std::uint64_t count, bool* existed);
  [[nodiscard]] bool IsData(std::uint64_t page) const {
    return ((data_pages_[page / 64] >> (page % 64)) & 1) != 0;
  }

  struct Region {
    std::uint64_t host = 0;  // start address in the VMM
    std::uint64_t size = 0;
    std::uint64_t file_offset = 0;
  };
  std::vector<Region> regions_;
  base::UniqueFd uffd_;
  base::MmapRegion file_map_;              // the memory file, read-only: the copy source
  std::vector<std::uint64_t> data_pages_;  // one bit per file page: set unless a hole
  std::uint64_t fingerprint_ = 0;
  std::optional<base::EventFd> stop_;
  std::thread thread_;
  // One bit per file page the serving thread filled on a fault; read by Recorded().
  std::vector<std::atomic<std::uint64_t>> served_;
};

}  // namespace ember::snapshot
