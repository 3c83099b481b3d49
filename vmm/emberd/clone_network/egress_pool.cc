#include "vmm/emberd/clone_network/egress_pool.h"

#include <net/if.h>

#include <algorithm>

namespace ember::emberd {
namespace {

// More slots than this would only make the bookkeeping large; a /16 is 16384 clones.
constexpr std::size_t kMaxSlots = std::size_t{1} << 16;

}  // namespace

EgressLease::EgressLease(EgressLease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      slot_(other.slot_),
      host_veth_(std::move(other.host_veth_)),
      host_address_(other.host_address_),
      clone_address_(other.clone_address_) {}

EgressLease& EgressLease::operator=(EgressLease&& other) noexcept {
  if (this != &other) {
    if (pool_ != nullptr) pool_->Release(slot_);
    pool_ = std::exchange(other.pool_, nullptr);
    slot_ = other.slot_;
    host_veth_ = std::move(other.host_veth_);
    host_address_ = other.host_address_;
    clone_address_ = other.clone_address_;
  }
  return *this;
}

const EgressPoolConfig& EgressLease::pool_config() const { return pool_->config(); }

EgressLease::~EgressLease() {
  if (pool_ != nullptr) pool_->Release(slot_);
}

absl::StatusOr<std::unique_ptr<EgressPool>> EgressPool::Create(EgressPoolConfig config) {
  const Ipv4Cidr& subnet = config.subnet;
  if (subnet.prefix > 30) {
    return absl::InvalidArgumentError("egress subnet " + subnet.ToString() +
                                      " is smaller than one /30 (a veth pair's two addresses)");
  }
  if ((subnet.address & ~subnet.Netmask()) != 0) {
    return absl::InvalidArgumentError("egress subnet " + subnet.ToString() +
                                      " has host bits set: give its network address");
  }
  const std::size_t slots =
      std::min(kMaxSlots, std::size_t{1} << static_cast<unsigned>(30 - subnet.prefix));
  // <prefix><largest slot number> must fit a link name (IFNAMSIZ - 1 characters).
  if (config.veth_prefix.empty() ||
      config.veth_prefix.size() + std::to_string(slots - 1).size() > IFNAMSIZ - 1 ||
      config.veth_prefix.find_first_of("/ :") != std::string::npos) {
    return absl::InvalidArgumentError("egress veth prefix \"" + config.veth_prefix +
                                      "\" with slot numbers up to " + std::to_string(slots - 1) +
                                      " does not make link names of at most " +
                                      std::to_string(IFNAMSIZ - 1) + " characters");
  }
  return std::unique_ptr<EgressPool>(new EgressPool(std::move(config), slots));
}

absl::StatusOr<EgressLease> EgressPool::Acquire() {
  std::lock_guard lock(mu_);
  auto free = std::find(taken_.begin(), taken_.end(), false);
  if (free == taken_.end()) {
    return absl::ResourceExhaustedError("all " + std::to_string(taken_.size()) +
                                        " egress slots of " + config_.subnet.ToString() +
                                        " are in use");
  }
  *free = true;
  const auto slot = static_cast<std::size_t>(free - taken_.begin());
  const std::uint32_t base = config_.subnet.address + 4 * static_cast<std::uint32_t>(slot);
  return EgressLease(this, slot, config_.veth_prefix + std::to_string(slot), Ipv4Cidr{base + 1, 30},
                     Ipv4Cidr{base + 2, 30});
}

void EgressPool::Release(std::size_t slot) {
  std::lock_guard lock(mu_);
  taken_[slot] = false;
}

}  // namespace ember::emberd
