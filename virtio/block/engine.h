#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "virtio/descriptor_chain.h"

namespace ember::virtio::block {

// One finished engine operation: the caller's `cookie` and the bytes transferred, or -errno.
struct Completion {
  std::uint64_t cookie = 0;
  std::int64_t result = 0;
};

// How a BlockDevice reaches its backing file. Two implementations: IoUringEngine
// (asynchronous, completions signalled on completion_fd()) and SyncEngine (each operation
// runs to completion inside the call). Owned by the BlockDevice and used only on the VMM loop
// thread; borrows the file descriptor, which the device keeps open longer than the engine.
//
// Operations are queued by Read/Write/Flush/WriteZeroes, started no later than
// Submit(), and finish in any order through Reap(). The iovecs, and the guest memory they
// point to, must stay valid until the operation has been reaped.
class BlockEngine {
 public:
  virtual ~BlockEngine() = default;

  virtual void Read(std::uint64_t offset, const IoVecs& iovs, std::uint64_t cookie) = 0;
  virtual void Write(std::uint64_t offset, const IoVecs& iovs, std::uint64_t cookie) = 0;
  // Makes completed writes durable (fdatasync).
  virtual void Flush(std::uint64_t cookie) = 0;
  // Zeroes the range, deallocating it (FALLOC_FL_PUNCH_HOLE) when `unmap` allows; a
  // discard is a write-zeroes with unmap, since punched holes read back as zeros.
  virtual void WriteZeroes(std::uint64_t offset, std::uint64_t len, bool unmap,
                           std::uint64_t cookie) = 0;

  // Starts everything queued since the last call: one system call per batch.
  virtual void Submit() = 0;
  // Appends the operations that have finished to `out`; never blocks and makes no system
  // call, so a vCPU thread (whose seccomp filter has no io_uring_enter) may reap too.
  virtual void Reap(std::vector<Completion>* out) = 0;
  // Submits what is queued, then blocks until Reap has something (at once if it already
  // has), for at most `timeout` (then DEADLINE_EXCEEDED). Only for quiescing before a
  // snapshot, with operations in flight; the VMM loop thread. The default suits engines
  // whose operations finish inside the calls that queue them.
  [[nodiscard]] virtual absl::Status WaitForCompletion(std::chrono::nanoseconds /*timeout*/) {
    return absl::OkStatus();
  }
  // Points every later operation at `fd` (borrowed, like the first one): the drive's backing
  // file was swapped. Only with no operation queued or in flight; the VMM loop thread.
  [[nodiscard]] virtual absl::Status ReplaceFile(int fd) = 0;
  // Signalled whenever operations finish, and never drained by the engine: watch it
  // edge-triggered (EventSource::edge_triggered). -1 when completions are ready as soon as
  // Submit returns (SyncEngine). Owned by the engine.
  [[nodiscard]] virtual int completion_fd() const = 0;
};

}  // namespace ember::virtio::block
