#include "virtio/block/io_uring_engine.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <vector>

#include "virtio/block/sync_engine.h"
#include "vmm/base/status.h"

namespace ember::virtio::block {
namespace {

// Index of the drive's file in the ring's registered-file table.
constexpr int kFileIndex = 0;

// Submission-queue entries. The submission queue only needs a batch, and a larger batch is
// submitted in pieces (NextSqe); a small one keeps its entries in cache, where one as deep
// as the virtqueue cycles through 16 KiB of SQEs, which the page copies evict between uses.
// The completion queue holds twice the virtqueue size (io_uring's default for a ring that
// deep): the device keeps at most one request per descriptor head in flight, so it never
// overflows, and an overflowed queue would need io_uring_enter to flush it, which a
// resetting vCPU thread cannot make.
constexpr unsigned kMaxBatch = 64;

// The operations the engine issues (a request with one data buffer becomes READ/WRITE, more
// become READV/WRITEV). The ring refuses every other opcode with -EACCES.
constexpr std::uint8_t kAllowedOps[] = {IORING_OP_READ,  IORING_OP_WRITE, IORING_OP_READV,
                                        IORING_OP_WRITEV, IORING_OP_FSYNC,
                                        IORING_OP_FALLOCATE};

// Fences the ring in before anyone can use it: only kAllowedOps, only on registered files
// (IOSQE_FIXED_FILE required, no other flag), and no io_uring_register call once enabled but
// the file-table update a drive swap makes (ReplaceFile).
// Without this the ring is a way around the VMM thread's seccomp filter: a compromised VMM
// could open, read, link and connect anything through it.
absl::Status Restrict(io_uring* ring) {
  std::vector<io_uring_restriction> rules;
  for (std::uint8_t op : kAllowedOps) {
    io_uring_restriction& rule = rules.emplace_back();
    rule.opcode = IORING_RESTRICTION_SQE_OP;
    rule.sqe_op = op;
  }
  for (auto kind : {IORING_RESTRICTION_SQE_FLAGS_ALLOWED, IORING_RESTRICTION_SQE_FLAGS_REQUIRED}) {
    io_uring_restriction& rule = rules.emplace_back();
    rule.opcode = static_cast<std::uint16_t>(kind);
    rule.sqe_flags = IOSQE_FIXED_FILE;
  }
  io_uring_restriction& update = rules.emplace_back();
  update.opcode = IORING_RESTRICTION_REGISTER_OP;
  update.register_op = IORING_REGISTER_FILES_UPDATE;
  // The raw system call: Debian's liburing 2.3 leaves io_uring_register_restrictions and
  // io_uring_enable_rings out of its shared library.
  auto register_op = [ring](unsigned opcode, const void* arg, unsigned count) {
    return ::syscall(SYS_io_uring_register, ring->ring_fd, opcode, arg, count) == 0 ? 0 : errno;
  };
  if (int err = register_op(IORING_REGISTER_RESTRICTIONS, rules.data(),
                            static_cast<unsigned>(rules.size()));
      err != 0) {
    return base::ErrnoError(err, "IORING_REGISTER_RESTRICTIONS", "block engine");
  }
  if (int err = register_op(IORING_REGISTER_ENABLE_RINGS, nullptr, 0); err != 0) {
    return base::ErrnoError(err, "IORING_REGISTER_ENABLE_RINGS", "block engine");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<IoUringEngine>> IoUringEngine::Create(int fd, unsigned depth) {
  EMBER_ASSIGN_OR_RETURN(base::EventFd completion, base::EventFd::Create());
  std::unique_ptr<IoUringEngine> engine(new IoUringEngine(std::move(completion)));
  io_uring_params params{};
  // Disabled until Restrict has fenced it in: restrictions can only be set on a ring that has
  // not started.
  params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_R_DISABLED;
  params.cq_entries = 2 * depth;
  if (int err = io_uring_queue_init_params(std::min(depth, kMaxBatch), &engine->ring_, &params);
      err < 0) {
    return base::ErrnoError(-err, "io_uring_queue_init_params", "block engine");
  }
  engine->ring_ready_ = true;
  if ((params.features & IORING_FEAT_EXT_ARG) == 0) {
    // WaitForCompletion's timeout would otherwise take a TIMEOUT SQE, which the ring refuses.
    return absl::FailedPreconditionError(
        "block engine: io_uring without IORING_FEAT_EXT_ARG (Linux 5.11 or later needed)");
  }
  if (int err = io_uring_register_files(&engine->ring_, &fd, 1); err < 0) {
    return base::ErrnoError(-err, "io_uring_register_files", "block engine");
  }
  if (int err = io_uring_register_eventfd(&engine->ring_, engine->completion_.Get()); err < 0) {
    return base::ErrnoError(-err, "io_uring_register_eventfd", "block engine");
  }
  EMBER_RETURN_IF_ERROR(Restrict(&engine->ring_));
  return engine;
}

absl::Status IoUringEngine::ReplaceFile(int fd) {
  // io_uring_register_files_update issues IORING_REGISTER_FILES_UPDATE, the one registration
  // Restrict left open.
  int result = io_uring_register_files_update(&ring_, kFileIndex, &fd, 1);
  if (result < 0) return base::ErrnoError(-result, "io_uring_register_files_update", "block engine");
  if (result != 1) {
    return absl::InternalError("block engine: io_uring_register_files_update updated no slot");
  }
  return absl::OkStatus();
}

IoUringEngine::~IoUringEngine() {
  // Tearing the ring down waits for the operations still in flight.
  if (ring_ready_) io_uring_queue_exit(&ring_);
}

io_uring_sqe* IoUringEngine::NextSqe(std::uint64_t cookie) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    // The submission queue is full (a batch of more than kMaxBatch): hand what it holds to
    // the kernel and take an entry from the emptied queue.
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  if (sqe == nullptr) {
    failed_.push_back({cookie, -EBUSY});
    return nullptr;
  }
  return sqe;
}

template <typename Prep>
void IoUringEngine::Queue(std::uint64_t cookie, Prep prep) {
  io_uring_sqe* sqe = NextSqe(cookie);
  if (sqe == nullptr) return;
  prep(sqe);
  io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE);
  io_uring_sqe_set_data64(sqe, cookie);
}

// A request whose data is one guest buffer (Linux's virtio_blk sends most 4 KiB requests
// so) becomes a plain READ/WRITE: the kernel then neither copies nor checks an iovec array.
void IoUringEngine::Read(std::uint64_t offset, const IoVecs& iovs, std::uint64_t cookie) {
  Queue(cookie, [&](io_uring_sqe* sqe) {
    if (iovs.size() == 1) {
      io_uring_prep_read(sqe, kFileIndex, iovs[0].iov_base, static_cast<unsigned>(iovs[0].iov_len),
                         offset);
    } else {
      io_uring_prep_readv(sqe, kFileIndex, iovs.data(), static_cast<unsigned>(iovs.size()),
                          offset);
    }
  });
}

void IoUringEngine::Write(std::uint64_t offset, const IoVecs& iovs, std::uint64_t cookie) {
  Queue(cookie, [&](io_uring_sqe* sqe) {
    if (iovs.size() == 1) {
      io_uring_prep_write(sqe, kFileIndex, iovs[0].iov_base,
                          static_cast<unsigned>(iovs[0].iov_len), offset);
    } else {
      io_uring_prep_writev(sqe, kFileIndex, iovs.data(), static_cast<unsigned>(iovs.size()),
                           offset);
    }
  });
}

void IoUringEngine::Flush(std::uint64_t cookie) {
  Queue(cookie, [](io_uring_sqe* sqe) {
    io_uring_prep_fsync(sqe, kFileIndex, IORING_FSYNC_DATASYNC);
  });
}

void IoUringEngine::WriteZeroes(std::uint64_t offset, std::uint64_t len, bool unmap,
                                std::uint64_t cookie) {
  Queue(cookie, [&](io_uring_sqe* sqe) {
    io_uring_prep_fallocate(sqe, kFileIndex, WriteZeroesMode(unmap), offset, len);
  });
}

void IoUringEngine::Submit() {
  // Errors here (EAGAIN/EBUSY under memory pressure) leave the SQEs queued for the next call.
  if (io_uring_sq_ready(&ring_) > 0) io_uring_submit(&ring_);
}

absl::Status IoUringEngine::WaitForCompletion(std::chrono::nanoseconds timeout) {
  if (!failed_.empty()) return absl::OkStatus();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::max(std::chrono::nanoseconds(0),
                               deadline - std::chrono::steady_clock::now());
    __kernel_timespec ts{};
    ts.tv_sec = std::chrono::duration_cast<std::chrono::seconds>(left).count();
    ts.tv_nsec = (left % std::chrono::seconds(1)).count();
    // Submits anything still queued and waits for one CQE without consuming it; the timeout
    // goes in the enter call's arguments (IORING_FEAT_EXT_ARG), not in an SQE.
    io_uring_cqe* cqe = nullptr;
    const int err = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    if (err >= 0 || err == -EBUSY) return absl::OkStatus();  // EBUSY: overflowed, reap them
    if (err == -ETIME) {
      return absl::DeadlineExceededError("block engine: no request finished in time");
    }
    if (err != -EINTR && err != -EAGAIN) {
      return base::ErrnoError(-err, "io_uring_submit_and_wait_timeout", "block engine");
    }
  }
}

void IoUringEngine::Reap(std::vector<Completion>* out) {
  // The eventfd is not drained: it is watched edge-triggered, and each CQE the kernel posts
  // after this reads the ring signals it again. Reads served from the page cache complete
  // inside Submit and are reaped right after it, and draining the signal they left would be
  // a system call per batch.
  out->insert(out->end(), failed_.begin(), failed_.end());
  failed_.clear();
  io_uring_cqe* cqe = nullptr;
  unsigned head = 0;
  unsigned count = 0;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    // Filled in place: copying in a temporary stalls on store forwarding.
    Completion& done = out->emplace_back();
    done.cookie = io_uring_cqe_get_data64(cqe);
    done.result = cqe->res;
    ++count;
  }
  io_uring_cq_advance(&ring_, count);
}

}  // namespace ember::virtio::block
