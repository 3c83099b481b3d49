#pragma once

#include <vector>

#include "virtio/block/engine.h"

namespace ember::virtio::block {

// The synchronous engine: preadv/pwritev/fdatasync/fallocate on the calling thread (the VMM
// loop), each operation finished before its call returns. Simple and dependency-free; the
// io_uring engine is the fast one.
class SyncEngine final : public BlockEngine {
 public:
  // Borrows `fd`, which must stay open as long as the engine.
  explicit SyncEngine(int fd) : fd_(fd) {}

  void Read(std::uint64_t offset, const IoVecs& iovs, std::uint64_t cookie) override;
  void Write(std::uint64_t offset, const IoVecs& iovs, std::uint64_t cookie) override;
  void Flush(std::uint64_t cookie) override;
  void WriteZeroes(std::uint64_t offset, std::uint64_t len, bool unmap,
                   std::uint64_t cookie) override;
  void Submit() override {}
  void Reap(std::vector<Completion>* out) override;
  [[nodiscard]] absl::Status ReplaceFile(int fd) override {
    fd_ = fd;
    return absl::OkStatus();
  }
  [[nodiscard]] int completion_fd() const override { return -1; }

 private:
  int fd_;
  std::vector<Completion> done_;
};

// The fallocate mode for a write-zeroes request: deallocating when allowed, since punched
// holes read back as zeros too.
[[nodiscard]] int WriteZeroesMode(bool unmap);

}  // namespace ember::virtio::block
