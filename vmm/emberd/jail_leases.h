#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "absl/status/statusor.h"

namespace ember::emberd {

class JailIdLeases;

// The identities jailed ember-vmms run as (emberd --jailer-id-base, --jailer-id-count): each VM
// its own uid and gid, the same number, from base + 1 to base + count, so that no VMM can
// signal, trace or share per-user limits with another. `base` itself is no VM's: it is the
// group of the snapshot files emberd keeps, which a restored clone gets as its one
// supplementary group to read them.
struct JailIds {
  std::uint32_t base = 0;
  std::uint32_t count = 0;
  [[nodiscard]] std::uint32_t snapshot_gid() const { return base; }
  [[nodiscard]] bool IsVmId(std::uint64_t id) const { return id > base && id - base <= count; }
  // Who holds which of them, shared by everything of one emberd that leases them (the jailed
  // view, the VMM pool), outliving them (emberd's main owns it); null: a jailed view keeps its
  // own.
  JailIdLeases* leases = nullptr;
};

// Who holds which id of a JailIds range: each jailed VM (by its id) and each of the VMM pool's
// jailed slots (by a holder name no VM id can be: PoolSlotHolder). One per emberd, shared by
// the jailed view (VMs) and the VMM pool (slots, whose id a VM takes over when it claims one),
// so that no two holders ever get the same id. Any thread.
class JailIdLeases {
 public:
  explicit JailIdLeases(const JailIds& ids) : base_(ids.base), count_(ids.count) {}

  // The id `holder` has, or a free one of the range leased to it now. RESOURCE_EXHAUSTED when
  // every id belongs to someone. Round the range from where the last search ended, so that a
  // freed id is the last to be given again.
  [[nodiscard]] absl::StatusOr<std::uint32_t> Take(const std::string& holder);
  // Marks `id` as `holder`'s (one a previous emberd gave it, even outside today's range);
  // false when another holder has it too (both keep it: it is given to no third).
  bool Recover(const std::string& holder, std::uint32_t id);
  [[nodiscard]] std::optional<std::uint32_t> IdOf(const std::string& holder) const;
  // `holder`'s id becomes free (only once nothing of that uid is left anywhere).
  void Release(const std::string& holder);
  // `to` takes over `from`'s id (a VM claiming a pool slot); the id `to` had is freed (nothing
  // was made with it yet). NotFound when `from` holds nothing.
  [[nodiscard]] absl::StatusOr<std::uint32_t> Transfer(const std::string& from,
                                                       const std::string& to);

 private:
  void FreeIfUnheld(std::uint32_t id);  // with mu_ held

  const std::uint32_t base_;
  const std::uint32_t count_;
  mutable std::mutex mu_;
  std::map<std::string, std::uint32_t> held_;  // guarded by mu_
  std::set<std::uint32_t> taken_;              // guarded by mu_: the values of held_
  std::uint32_t next_ = 0;  // guarded by mu_: where the search for a free id starts (an offset)
};

// The holder name of the pool slot `slot`: '/' is in no VM id.
[[nodiscard]] inline std::string PoolSlotHolder(const std::string& slot) { return "pool/" + slot; }

// In a jailed VM's directory: the uid (and gid) its ember-vmm runs as, so that the next emberd
// gives it to no other VM while this one is on record.
inline constexpr char kJailIdFile[] = "jail-id";
// Writes `id` as `vm_dir`'s kJailIdFile.
[[nodiscard]] absl::Status RecordJailId(const std::string& vm_dir, std::uint32_t id);

}  // namespace ember::emberd
