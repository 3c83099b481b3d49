#include "vmm/restore.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "snapshot/state_file.h"
#include "tests/support/process.h"
#include "vmm/arch/x86_64/layout.h"

namespace ember::vmm {
namespace {

using arch::kMiB;

// A state file as Ember writes it for a VM of `mem_mib` MiB and `vcpus` vCPUs (only what
// PrepareRestore reads), which each test then bends one way.
v1::SnapshotState ValidState(std::uint32_t mem_mib, std::uint32_t vcpus) {
  v1::SnapshotState state;
  state.mutable_config()->mutable_machine_config()->set_mem_size_mib(mem_mib);
  state.mutable_config()->mutable_machine_config()->set_vcpu_count(vcpus);
  std::uint64_t offset = 0;
  for (const base::GuestMemory::Range& range : arch::GuestRamRanges(mem_mib * kMiB)) {
    v1::MemoryRegion* region = state.add_memory();
    region->set_guest_start(range.start);
    region->set_size(range.size);
    region->set_file_offset(offset);
    offset += range.size;
  }
  state.set_memory_file_size(offset);
  for (std::uint32_t id = 0; id < vcpus; ++id) state.add_vcpus()->set_id(id);
  return state;
}

// PrepareRestore's verdict on `state`, with a (sparse) memory file of the size it records.
absl::Status Prepare(const v1::SnapshotState& state) {
  std::string state_path = testing::WriteTempFile("vm.state", "");
  EXPECT_TRUE(snapshot::WriteStateFile(state_path, state).ok());
  std::string memory_path = testing::WriteTempFile("vm.mem", "");
  EXPECT_EQ(::truncate(memory_path.c_str(), static_cast<off_t>(state.memory_file_size())), 0);
  VmmOptions options;
  return PrepareRestore(state_path, memory_path, {}, &options);
}

void ExpectRefused(const v1::SnapshotState& state, const std::string& expected) {
  absl::Status status = Prepare(state);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("does not match its configuration: " + expected),
            std::string::npos)
      << status;
}

TEST(PrepareRestore, StateMatchingItsConfigurationIsAccepted) {
  EXPECT_TRUE(Prepare(ValidState(128, 2)).ok());
  // Above the MMIO gap too: two regions, the second at 4 GiB and right after the first in
  // the memory file.
  EXPECT_TRUE(Prepare(ValidState(4096, 1)).ok());
}

TEST(PrepareRestore, ExtraMemoryRegionInTheMmioGapIsRefused) {
  v1::SnapshotState state = ValidState(128, 1);
  v1::MemoryRegion* low = state.mutable_memory(0);
  low->set_size(low->size() - 4096);
  v1::MemoryRegion* gap = state.add_memory();
  gap->set_guest_start(arch::kMmioGapStart);
  gap->set_size(4096);
  gap->set_file_offset(low->size());
  ExpectRefused(state, "it has 2 memory regions; a VM of 128 MiB has 1");
}

TEST(PrepareRestore, RegionLargerThanTheConfiguredMemoryIsRefused) {
  v1::SnapshotState state = ValidState(128, 1);
  state.mutable_memory(0)->set_size(256 * kMiB);
  state.set_memory_file_size(256 * kMiB);
  ExpectRefused(state, "memory region 0 is 0x10000000 bytes at 0x0; a VM of 128 MiB has "
                       "0x8000000 bytes at 0x0");
}

TEST(PrepareRestore, RegionMovedIntoTheMmioGapIsRefused) {
  v1::SnapshotState state = ValidState(4096, 1);
  state.mutable_memory(1)->set_guest_start(arch::kMmioGapStart);
  ExpectRefused(state, "memory region 1 is 0x30000000 bytes at 0xd0000000");
}

TEST(PrepareRestore, RegionAtTheWrongMemoryFileOffsetIsRefused) {
  v1::SnapshotState state = ValidState(4096, 1);
  state.mutable_memory(1)->set_file_offset(0);  // both regions backed by the same bytes
  ExpectRefused(state, "memory region 1 is at memory-file offset 0x0; it must be at 0xd0000000");
}

TEST(PrepareRestore, MemoryFileLargerThanTheRegionsIsRefused) {
  v1::SnapshotState state = ValidState(128, 1);
  state.set_memory_file_size(256 * kMiB);
  ExpectRefused(state, "it records a memory file of 268435456 bytes; its memory regions fill "
                       "134217728");
}

TEST(PrepareRestore, MoreVcpusThanTheConfigurationGivesAreRefused) {
  v1::SnapshotState state = ValidState(128, 2);
  state.mutable_config()->mutable_machine_config()->set_vcpu_count(1);
  ExpectRefused(state, "it has 2 vCPUs; its configuration gives 1");
}

TEST(PrepareRestore, DuplicateVcpuIdIsRefused) {
  v1::SnapshotState state = ValidState(128, 2);
  state.mutable_vcpus(1)->set_id(0);
  ExpectRefused(state, "vCPU id 0 appears twice");
}

TEST(PrepareRestore, VcpuIdBeyondTheCountIsRefused) {
  v1::SnapshotState state = ValidState(128, 2);
  state.mutable_vcpus(1)->set_id(7);
  ExpectRefused(state, "vCPU id 7 is out of range for 2 vCPUs");
}

}  // namespace
}  // namespace ember::vmm
