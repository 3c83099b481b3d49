#include "vmm/emberd/jail_leases.h"

#include "vmm/emberd/store.h"

namespace ember::emberd {

absl::StatusOr<std::uint32_t> JailIdLeases::Take(const std::string& holder) {
  std::lock_guard lock(mu_);
  if (auto it = held_.find(holder); it != held_.end()) return it->second;
  for (std::uint32_t tried = 0; tried < count_; ++tried) {
    const std::uint32_t candidate = base_ + 1 + (next_ + tried) % count_;
    if (taken_.count(candidate) != 0) continue;
    next_ = (next_ + tried + 1) % count_;
    held_[holder] = candidate;
    taken_.insert(candidate);
    return candidate;
  }
  return absl::ResourceExhaustedError(
      "every jail uid emberd may give (" + std::to_string(base_ + 1) + " to " +
      std::to_string(base_ + count_) +
      ", --jailer-id-base and --jailer-id-count) belongs to a VM or a pooled VMM; delete one "
      "(a stopped VM keeps its uid until it is deleted) or widen the range");
}

bool JailIdLeases::Recover(const std::string& holder, std::uint32_t id) {
  std::lock_guard lock(mu_);
  const bool alone = taken_.insert(id).second;
  held_[holder] = id;
  return alone;
}

std::optional<std::uint32_t> JailIdLeases::IdOf(const std::string& holder) const {
  std::lock_guard lock(mu_);
  auto it = held_.find(holder);
  if (it == held_.end()) return std::nullopt;
  return it->second;
}

void JailIdLeases::Release(const std::string& holder) {
  std::lock_guard lock(mu_);
  auto it = held_.find(holder);
  if (it == held_.end()) return;
  const std::uint32_t id = it->second;
  held_.erase(it);
  FreeIfUnheld(id);
}

void JailIdLeases::FreeIfUnheld(std::uint32_t id) {
  // A recovered id two holders claimed stays taken while either has it.
  for (const auto& [other, other_id] : held_) {
    if (other_id == id) return;
  }
  taken_.erase(id);
}

absl::StatusOr<std::uint32_t> JailIdLeases::Transfer(const std::string& from,
                                                     const std::string& to) {
  std::lock_guard lock(mu_);
  auto it = held_.find(from);
  if (it == held_.end()) return absl::NotFoundError("\"" + from + "\" holds no jail uid");
  const std::uint32_t id = it->second;
  held_.erase(it);
  if (auto old = held_.find(to); old != held_.end() && old->second != id) {
    const std::uint32_t freed = old->second;
    held_.erase(old);
    FreeIfUnheld(freed);
  }
  held_[to] = id;
  return id;
}

absl::Status RecordJailId(const std::string& vm_dir, std::uint32_t id) {
  return WriteFileAtomic(vm_dir + "/" + kJailIdFile, std::to_string(id) + "\n");
}

}  // namespace ember::emberd
