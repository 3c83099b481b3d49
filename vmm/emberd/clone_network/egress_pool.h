#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/emberd/clone_network/ipv4.h"

namespace ember::emberd {

// Where clones' egress veth pairs take their addresses and host-side names from (configured
// once per emberd): `subnet` is split into /30s, slot i's host end gets the first usable
// address of the i-th one and the clone's end the second; the host end is named
// <veth_prefix><i>. Two pools on one host need disjoint subnets and prefixes.
struct EgressPoolConfig {
  Ipv4Cidr subnet{(10u << 24) | (200u << 16), 16};  // 10.200.0.0/16: 16384 clones
  std::string veth_prefix = "ember";
  // Whether clones' egress may reach the private ranges (10/8, 172.16/12, 192.168/16,
  // 100.64/10: the host's LANs, typically). Never reachable whatever this says: the host
  // itself, link-local (cloud metadata at 169.254.169.254), loopback and `subnet` (other clones).
  bool reach_private_ranges = false;
};

class EgressPool;

// One slot of an EgressPool, held until destroyed (then free for the next clone). Move-only;
// the pool must outlive it.
class EgressLease {
 public:
  EgressLease(EgressLease&& other) noexcept;
  EgressLease& operator=(EgressLease&& other) noexcept;  // frees this lease's slot first
  EgressLease(const EgressLease&) = delete;
  ~EgressLease();

  [[nodiscard]] const std::string& host_veth() const { return host_veth_; }
  [[nodiscard]] Ipv4Cidr host_address() const { return host_address_; }
  [[nodiscard]] Ipv4Cidr clone_address() const { return clone_address_; }
  // The configuration of the pool this lease is from (not for a moved-from lease).
  [[nodiscard]] const EgressPoolConfig& pool_config() const;

 private:
  friend class EgressPool;
  EgressLease(EgressPool* pool, std::size_t slot, std::string host_veth, Ipv4Cidr host,
              Ipv4Cidr clone)
      : pool_(pool),
        slot_(slot),
        host_veth_(std::move(host_veth)),
        host_address_(host),
        clone_address_(clone) {}

  EgressPool* pool_;  // null once moved from
  std::size_t slot_;
  std::string host_veth_;
  Ipv4Cidr host_address_;
  Ipv4Cidr clone_address_;
};

// Hands out slots; any thread.
class EgressPool {
 public:
  // InvalidArgument for a subnet smaller than a /30 or not aligned to its prefix, or a prefix
  // that leaves no room in a link name for the slot number.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<EgressPool>> Create(EgressPoolConfig config);

  // The lowest free slot; ResourceExhausted when every one is leased.
  [[nodiscard]] absl::StatusOr<EgressLease> Acquire();
  [[nodiscard]] std::size_t capacity() const { return taken_.size(); }
  [[nodiscard]] const EgressPoolConfig& config() const { return config_; }

 private:
  friend class EgressLease;
  EgressPool(EgressPoolConfig config, std::size_t slots)
      : config_(std::move(config)), taken_(slots, false) {}
  void Release(std::size_t slot);

  const EgressPoolConfig config_;
  std::mutex mu_;
  std::vector<bool> taken_;  // guarded by mu_
};

}  // namespace ember::emberd
