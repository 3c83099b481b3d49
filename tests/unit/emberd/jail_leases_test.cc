// Jail uids are leased from one table shared by the jailed view (VMs) and the VMM pool (slots):
// no two holders ever have the same id, a VM that claims a slot runs as the slot's id and frees
// its own, and a freed id is the last to be given again.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "vmm/emberd/jail_leases.h"

namespace ember::emberd {
namespace {

TEST(JailIdLeases, VmsAndPoolSlotsNeverShareAnId) {
  const JailIds ids{900000, 4};
  JailIdLeases leases(ids);
  std::set<std::uint32_t> given;
  const std::vector<std::string> holders = {"vm-a", PoolSlotHolder("1-0"), "vm-b",
                                            PoolSlotHolder("1-1")};
  for (const std::string& holder : holders) {
    absl::StatusOr<std::uint32_t> id = leases.Take(holder);
    ASSERT_TRUE(id.ok()) << id.status();
    EXPECT_TRUE(ids.IsVmId(*id)) << *id;
    EXPECT_TRUE(given.insert(*id).second) << holder << " got " << *id << " twice";
  }
  EXPECT_EQ(leases.Take("vm-c").status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(JailIdLeases, AHolderAskingAgainKeepsItsId) {
  JailIdLeases leases(JailIds{900000, 4});
  absl::StatusOr<std::uint32_t> first = leases.Take("vm-a");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*leases.Take("vm-a"), *first);
}

TEST(JailIdLeases, AVmClaimingASlotTakesItsIdAndFreesItsOwn) {
  JailIdLeases leases(JailIds{900000, 2});
  const std::uint32_t vm_id = *leases.Take("vm-a");
  const std::uint32_t slot_id = *leases.Take(PoolSlotHolder("1-0"));
  absl::StatusOr<std::uint32_t> moved = leases.Transfer(PoolSlotHolder("1-0"), "vm-a");
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, slot_id);
  EXPECT_EQ(leases.IdOf("vm-a"), slot_id);
  EXPECT_EQ(leases.IdOf(PoolSlotHolder("1-0")), std::nullopt);
  // The VM's first id is free again, and the only one left.
  EXPECT_EQ(*leases.Take("vm-b"), vm_id);
}

TEST(JailIdLeases, TransferFromAHolderOfNothingIsNotFound) {
  JailIdLeases leases(JailIds{900000, 2});
  EXPECT_EQ(leases.Transfer(PoolSlotHolder("gone"), "vm-a").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(JailIdLeases, AReleasedIdIsTheLastToBeGivenAgain) {
  JailIdLeases leases(JailIds{900000, 3});
  const std::uint32_t a = *leases.Take("a");
  leases.Release("a");
  EXPECT_NE(*leases.Take("b"), a);
  EXPECT_NE(*leases.Take("c"), a);
  EXPECT_EQ(*leases.Take("d"), a);
}

TEST(JailIdLeases, ARecoveredIdIsGivenToNoOneElse) {
  JailIdLeases leases(JailIds{900000, 2});
  EXPECT_TRUE(leases.Recover("old-vm", 900001));
  EXPECT_EQ(*leases.Take("new-vm"), 900002u);
  EXPECT_EQ(leases.Take("newer-vm").status().code(), absl::StatusCode::kResourceExhausted);
  // Two records of one id: it stays taken until both are gone.
  EXPECT_FALSE(leases.Recover("twin", 900001));
  leases.Release("old-vm");
  EXPECT_EQ(leases.Take("newer-vm").status().code(), absl::StatusCode::kResourceExhausted);
  leases.Release("twin");
  EXPECT_EQ(*leases.Take("newer-vm"), 900001u);
}

}  // namespace
}  // namespace ember::emberd
