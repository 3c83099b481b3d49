#include "snapshot/uffd_page_server.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <lzma.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_format.h"
#include "vmm/base/clock.h"
#include "vmm/base/logging.h"
#include "vmm/base/metrics.h"
#include "vmm/base/status.h"


namespace ember::snapshot {
namespace {

constexpr std::uint64_t kPageSize = 4096;
// Fault messages read per read(2): one per vCPU is the common case; a few more cost nothing.
constexpr std::size_t kMessagesPerRead = 16;

struct Metrics {
  base::Metric* faults;
  base::Metric* zero_faults;
  base::Metric* prefetched_pages;
  base::Metric* prefetch_us;
  // The host's part of serving faults: from the fault's message read to its page in place
  // (the vCPU's wait, less the time the message sat unread). perf/snapshot_bench reports it
  // apart from the guest's own time to touch its working set.
  base::Metric* fault_service_us;
};

Metrics& GetMetrics() {
  static Metrics metrics{base::MetricsRegistry::Global().Get("uffd", "page_faults_served"),
                         base::MetricsRegistry::Global().Get("uffd", "zero_page_faults"),
                         base::MetricsRegistry::Global().Get("uffd", "prefetched_pages"),
                         base::MetricsRegistry::Global().Get("uffd", "prefetch_us"),
                         base::MetricsRegistry::Global().Get("uffd", "fault_service_us")};
  return metrics;
}

}  // namespace

absl::StatusOr<base::UniqueFd> OpenUserfaultfd() {
  int fd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd >= 0) return base::UniqueFd(fd);
  int syscall_errno = errno;
  base::UniqueFd dev(::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
  if (dev) {
    fd = ::ioctl(dev.Get(), USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0) return base::UniqueFd(fd);
  }
  return base::ErrnoError(syscall_errno, "userfaultfd",
                          "guest memory (needs CAP_SYS_PTRACE, vm.unprivileged_userfaultfd=1 "
                          "or access to /dev/userfaultfd)");
}

absl::StatusOr<std::unique_ptr<UffdPageServer>> UffdPageServer::Create(
    const base::GuestMemory& memory, const MemoryFileRef& memory_file,
    const std::string& snapshot_identity) {
  std::unique_ptr<UffdPageServer> server(new UffdPageServer());
  const std::string& memory_path = memory_file.path;
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd file, OpenMemoryFile(memory_file, memory.total_size()));
  // The memory, not the trailer after it.
  std::uint64_t size = memory.total_size();
  EMBER_ASSIGN_OR_RETURN(server->file_map_,
                         base::MmapRegion::Map(size, PROT_READ, MAP_SHARED | MAP_NORESERVE,
                                               file.Get()));

  // Which pages hold data: the file is sparse, its holes are the guest's zero pages. The
  // extents also go into the fingerprint, with the snapshot's identity.
  std::uint64_t pages = size / kPageSize;
  server->data_pages_.assign((pages + 63) / 64, 0);
  std::uint64_t crc =
      lzma_crc64(reinterpret_cast<const std::uint8_t*>(snapshot_identity.data()),  // bytes
                 snapshot_identity.size(), 0);
  for (off_t pos = 0; static_cast<std::uint64_t>(pos) < size;) {
    off_t data = ::lseek(file.Get(), pos, SEEK_DATA);
    if (data < 0) break;  // ENXIO: only a hole remains
    off_t hole = ::lseek(file.Get(), data, SEEK_HOLE);
    if (hole < 0) return base::ErrnoError("lseek(SEEK_HOLE)", memory_path);
    if (static_cast<std::uint64_t>(data) >= size) break;  // the trailer
    std::uint64_t extent[2] = {static_cast<std::uint64_t>(data),
                               std::min(size, static_cast<std::uint64_t>(hole))};
    crc = lzma_crc64(reinterpret_cast<const std::uint8_t*>(extent), sizeof(extent), crc);  // bytes
    for (std::uint64_t page = extent[0] / kPageSize; page < (extent[1] + kPageSize - 1) / kPageSize;
         ++page) {
      server->data_pages_[page / 64] |= std::uint64_t{1} << (page % 64);
    }
    pos = static_cast<off_t>(extent[1]);
  }
  server->fingerprint_ = crc;

  EMBER_ASSIGN_OR_RETURN(server->uffd_, OpenUserfaultfd());
  uffdio_api api{};
  api.api = UFFD_API;
  if (::ioctl(server->uffd_.Get(), UFFDIO_API, &api) != 0) {
    return base::ErrnoError("ioctl(UFFDIO_API)", "userfaultfd");
  }
  for (const base::GuestRegion& region : memory.regions()) {
    uffdio_register reg{};
    // The host address as the kernel's integer form of it.
    reg.range.start = reinterpret_cast<std::uint64_t>(region.host);
    reg.range.len = region.size;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(server->uffd_.Get(), UFFDIO_REGISTER, &reg) != 0) {
      return base::ErrnoError("ioctl(UFFDIO_REGISTER)", "guest memory");
    }
    constexpr std::uint64_t kNeeded = (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_ZEROPAGE);
    if ((reg.ioctls & kNeeded) != kNeeded) {
      return absl::FailedPreconditionError("userfaultfd: this kernel cannot copy or zero pages "
                                           "into anonymous guest memory");
    }
    server->regions_.push_back({reg.range.start, region.size, region.file_offset});
  }
  server->served_ = std::vector<std::atomic<std::uint64_t>>(server->data_pages_.size());
  EMBER_ASSIGN_OR_RETURN(server->stop_, base::EventFd::Create());
  return server;
}

UffdPageServer::~UffdPageServer() { Stop(); }

absl::Status UffdPageServer::Fill(std::uint64_t first_page, std::uint64_t count, bool* existed) {
  *existed = false;
  while (count > 0) {
    std::uint64_t offset = first_page * kPageSize;
    const Region* region = nullptr;
    for (const Region& r : regions_) {
      if (offset >= r.file_offset && offset < r.file_offset + r.size) region = &r;
    }
    if (region == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat("page %u is outside guest memory",
                                                        first_page));
    }
    // One ioctl per stretch of pages that are all data or all hole, within one region.
    bool data = IsData(first_page);
    std::uint64_t region_left = (region->file_offset + region->size - offset) / kPageSize;
    std::uint64_t n = 1;
    while (n < count && n < region_left && IsData(first_page + n) == data) ++n;
    std::uint64_t dst = region->host + (offset - region->file_offset);
    std::uint64_t done = 0;
    while (done < n * kPageSize) {
      std::int64_t result = 0;
      int rc = 0;
      if (data) {
        uffdio_copy copy{};
        copy.dst = dst + done;
        // The source as the kernel's integer form of a user address.
        copy.src = reinterpret_cast<std::uint64_t>(file_map_.data() + offset + done);
        copy.len = n * kPageSize - done;
        rc = ::ioctl(uffd_.Get(), UFFDIO_COPY, &copy);
        result = copy.copy;
      } else {
        uffdio_zeropage zero{};
        zero.range.start = dst + done;
        zero.range.len = n * kPageSize - done;
        rc = ::ioctl(uffd_.Get(), UFFDIO_ZEROPAGE, &zero);
        result = zero.zeropage;
      }
      if (rc == 0) {
        done = n * kPageSize;
      } else if (errno == EAGAIN && result > 0) {
        done += static_cast<std::uint64_t>(result);  // partly done; go on from there
      } else if (errno == EEXIST) {
        // Already present (another fault or the VMM got there first): skip this page.
        *existed = true;
        if (result > 0) done += static_cast<std::uint64_t>(result);
        done = (done / kPageSize + 1) * kPageSize;
        uffdio_range wake{dst, n * kPageSize};
        (void)::ioctl(uffd_.Get(), UFFDIO_WAKE, &wake);
      } else {
        return base::ErrnoError(data ? "ioctl(UFFDIO_COPY)" : "ioctl(UFFDIO_ZEROPAGE)",
                                absl::StrFormat("guest memory page %u", first_page));
      }
    }
    first_page += n;
    count -= n;
  }
  return absl::OkStatus();
}

absl::Status UffdPageServer::Prefetch(const WorkingSet& set) {
  std::uint64_t start = base::MonotonicMicros();
  for (const PageRun& run : set.runs) {
    bool existed = false;
    EMBER_RETURN_IF_ERROR(Fill(run.first_page, run.pages, &existed));
  }
  std::uint64_t elapsed = base::MonotonicMicros() - start;
  GetMetrics().prefetched_pages->Add(set.page_count());
  GetMetrics().prefetch_us->Set(elapsed);
  EMBER_LOG(kInfo) << "prefetched " << set.page_count() << " pages in " << set.runs.size()
                   << " runs in " << elapsed << " us";
  return absl::OkStatus();
}

absl::Status UffdPageServer::Start(std::function<absl::Status()> on_thread_start) {
  if (thread_.joinable()) return absl::FailedPreconditionError("the page server is running");
  thread_ = std::thread([this, on_thread_start = std::move(on_thread_start)] {
    // Every signal is for another thread (SIGUSR1 and the stop signals go to the VMM thread's
    // signalfds; the kick to vCPUs): blocked here, none can end up on this one.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    if (absl::Status status = on_thread_start(); !status.ok()) {
      EMBER_LOG(kError) << "uffd page server: " << status.message();
      std::abort();  // the guest's memory could not be served
    }
    Serve();
  });
  return absl::OkStatus();
}

void UffdPageServer::Stop() {
  if (!thread_.joinable()) return;
  stop_->Signal();
  thread_.join();
}

void UffdPageServer::Serve() {
  uffd_msg messages[kMessagesPerRead];
  for (;;) {
    pollfd fds[2] = {{uffd_.Get(), POLLIN, 0}, {stop_->Get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      EMBER_LOG(kError) << "uffd page server: poll: " << std::strerror(errno);
      std::abort();
    }
    if ((fds[1].revents & POLLIN) != 0) return;
    const std::uint64_t woken_us = base::MonotonicMicros();
    ssize_t n = ::read(uffd_.Get(), messages, sizeof(messages));
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      EMBER_LOG(kError) << "uffd page server: read: " << std::strerror(errno);
      std::abort();
    }
    for (std::size_t i = 0; i < static_cast<std::size_t>(n) / sizeof(uffd_msg); ++i) {
      if (messages[i].event == UFFD_EVENT_PAGEFAULT) ServeFault(messages[i].arg.pagefault.address);
    }
    GetMetrics().fault_service_us->Add(base::MonotonicMicros() - woken_us);
  }
}

void UffdPageServer::ServeFault(std::uint64_t address) {
  address &= ~(kPageSize - 1);
  for (const Region& region : regions_) {
    if (address < region.host || address >= region.host + region.size) continue;
    std::uint64_t page = (region.file_offset + (address - region.host)) / kPageSize;
    bool existed = false;
    if (absl::Status status = Fill(page, 1, &existed); !status.ok()) {
      // The faulting thread cannot go on without this page, and nothing can be retried.
      EMBER_LOG(kError) << "uffd page server: " << status.message();
      std::abort();
    }
    served_[page / 64].fetch_or(std::uint64_t{1} << (page % 64), std::memory_order_relaxed);
    GetMetrics().faults->Add();
    if (!IsData(page)) GetMetrics().zero_faults->Add();
    return;
  }
  EMBER_LOG(kError) << "uffd page server: fault at 0x" << std::hex << address
                    << " outside guest memory";
  std::abort();
}

WorkingSet UffdPageServer::Recorded() const {
  std::vector<std::uint64_t> bitmap(served_.size());
  for (std::size_t i = 0; i < bitmap.size(); ++i) {
    bitmap[i] = served_[i].load(std::memory_order_relaxed);
  }
  return {memory_size(), fingerprint_, RunsFromBitmap(bitmap, memory_size() / kPageSize)};
}

}  // namespace ember::snapshot
