#pragma once

#include <liburing.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "virtio/block/engine.h"
#include "vmm/base/event_fd.h"

namespace ember::virtio::block {

// The asynchronous engine: one io_uring per drive. Operations become SQEs against the drive's
// registered file (IOSQE_FIXED_FILE, no per-operation fd lookup); Submit() hands the whole
// batch to the kernel in one io_uring_submit, so a guest notification that brought N requests
// costs one system call (one per 64 requests for bigger batches). Each completion signals
// completion_fd(), an eventfd that the VMM loop watches edge-triggered.
//
// The ring is restricted before it is enabled (IORING_REGISTER_RESTRICTIONS): it accepts only
// the opcodes the engine issues, only on its registered file, and of all registrations only a
// file-table update (a drive swap), so it is no way around the VMM thread's seccomp filter: a
// file put in the table gets only the reads, writes, syncs and fallocates that filter allows
// on any fd anyway. Anything else completes (or is refused) with -EACCES.
class IoUringEngine final : public BlockEngine {
 public:
  // Borrows `fd` (kept open by the device longer than the engine). `depth` is the most
  // operations in flight at once: the virtqueue size, since each holds a descriptor head.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<IoUringEngine>> Create(int fd,
                                                                            unsigned depth);
  ~IoUringEngine() override;
  IoUringEngine(const IoUringEngine&) = delete;
  IoUringEngine& operator=(const IoUringEngine&) = delete;

  void Read(std::uint64_t offset, const IoVecs& iovs, std::uint64_t cookie) override;
  void Write(std::uint64_t offset, const IoVecs& iovs, std::uint64_t cookie) override;
  void Flush(std::uint64_t cookie) override;
  void WriteZeroes(std::uint64_t offset, std::uint64_t len, bool unmap,
                   std::uint64_t cookie) override;
  void Submit() override;
  void Reap(std::vector<Completion>* out) override;
  [[nodiscard]] absl::Status WaitForCompletion(std::chrono::nanoseconds timeout) override;
  // Updates the registered file table's one slot (IORING_REGISTER_FILES_UPDATE).
  [[nodiscard]] absl::Status ReplaceFile(int fd) override;
  [[nodiscard]] int completion_fd() const override { return completion_.Get(); }

  // Tests only: the ring itself, to submit what a compromised VMM could write into it.
  [[nodiscard]] io_uring& ring_for_testing() { return ring_; }

 private:
  explicit IoUringEngine(base::EventFd completion) : completion_(std::move(completion)) {}
  // The next SQE for `cookie` against the registered file, or nullptr (the operation then
  // completes with -EBUSY).
  io_uring_sqe* NextSqe(std::uint64_t cookie);
  // Gets an SQE, lets `prep` fill it, and aims it at the registered file with `cookie`.
  template <typename Prep>
  void Queue(std::uint64_t cookie, Prep prep);

  io_uring ring_{};
  bool ring_ready_ = false;
  base::EventFd completion_;
  // Operations that could not get an SQE, reported by the next Reap.
  std::vector<Completion> failed_;
};

}  // namespace ember::virtio::block
