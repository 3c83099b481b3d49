#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"
#include "vmm/emberd/clone_network/egress_pool.h"
#include "vmm/emberd/clone_network/ipv4.h"
#include "vmm/emberd/clone_network/netns.h"

namespace ember::emberd {

// The name of a clone's end of its egress veth pair, inside the clone's namespace (every
// clone's is the same; a tap may not take it).
inline constexpr char kCloneEgressLink[] = "egress0";
// Where named clone namespaces are mounted by default (beside `ip netns`'s /run/netns).
inline constexpr char kCloneNetnsDir[] = "/run/ember/netns";

// The host's nftables table (family ip) of the clone whose host veth is `host_veth`.
[[nodiscard]] std::string EgressTableName(const std::string& host_veth);

// What one clone's network is. Clones restored from one snapshot all get the same `tap_name`
// and `tap_address` (their guests all have the deployed VM's address): each in a namespace of
// its own, they cannot clash.
struct CloneNetworkSpec {
  std::string tap_name;  // the deployed VM's host_dev_name, e.g. "tap0"
  // A jailed clone's uid and gid: the tap is theirs, so its VMM opens it without privileges.
  // Unset: root's (ember-jailer --isolate --netns --tap hands it to the clone's uid when it
  // starts the VMM, which is how a network made before its clone's uid is known is used).
  std::optional<uid_t> tap_owner;
  std::optional<gid_t> tap_group;
  // The host side of the tap (the guest's gateway), e.g. 172.16.0.1/30; unset: none.
  std::optional<Ipv4Cidr> tap_address;
  // With a lease: a veth pair to the host with the lease's addresses, the clone namespace's
  // default route through the host end, and NAT twice: what leaves the namespace takes its
  // veth address (masquerade inside), and what leaves the host by another link takes that
  // link's (masquerade on the host). Filtered on the host: the clone reaches neither the host
  // itself nor what the lease's pool keeps it from (EgressPoolConfig). Needs the host's IPv4
  // forwarding on. Unset: the clone reaches nothing beyond its tap.
  std::optional<EgressLease> egress;
  // Non-empty: the namespace is also mounted at this path (NameNetns), so that ember-jailer
  // can join it by name (JailerArgs). Unset: held only by fd.
  std::string mount_path;
};

// One clone's network namespace and what is in it: exactly the tap (and `lo`, and with egress
// the veth end), plus with egress the host's veth end and one nftables table on the host
// (ember_<host veth>). Everything it made goes at Teardown or destruction; a VMM still inside
// then loses its tap. Move-only; used by one thread at a time.
class CloneNetwork {
 public:
  // Builds it all, or nothing: on an error everything made so far is removed again.
  // Invalid names are InvalidArgument; a host veth name in use is AlreadyExists; egress with
  // the host's forwarding off is FailedPrecondition. Needs CAP_NET_ADMIN and CAP_SYS_ADMIN
  // (root), and a thread that may setns (it returns to its own namespace).
  [[nodiscard]] static absl::StatusOr<CloneNetwork> Prepare(CloneNetworkSpec spec);

  CloneNetwork(CloneNetwork&& other) noexcept;
  CloneNetwork& operator=(CloneNetwork&&) = delete;
  CloneNetwork(const CloneNetwork&) = delete;
  ~CloneNetwork();

  // Removes everything Prepare made (idempotent); every step is tried, the first error
  // returned. The destructor does this and logs an error.
  [[nodiscard]] absl::Status Teardown();

  // The namespace, for a process to join (setns) or to hand to one. Borrowed.
  [[nodiscard]] int netns_fd() const { return netns_.Get(); }
  // Moves the calling thread into the namespace until the result is destroyed: a VMM started
  // meanwhile (fork, posix_spawn) runs in it and finds its tap there (unjailed launches).
  [[nodiscard]] absl::StatusOr<ScopedNetns> Enter() const { return ScopedNetns::Enter(netns_fd()); }
  // ember-jailer's options that put a jailed VMM into this namespace: --netns and the mount
  // path. FailedPrecondition when the spec had no mount_path.
  [[nodiscard]] absl::StatusOr<std::vector<std::string>> JailerArgs() const;

  [[nodiscard]] const CloneNetworkSpec& spec() const { return spec_; }
  // The host's nftables table of this clone ("" without egress).
  [[nodiscard]] const std::string& host_nft_table() const { return host_nft_table_; }

 private:
  explicit CloneNetwork(CloneNetworkSpec spec) : spec_(std::move(spec)) {}
  [[nodiscard]] absl::Status BuildInside();
  [[nodiscard]] absl::Status BuildEgress();

  CloneNetworkSpec spec_;
  base::UniqueFd netns_;
  // What exists now, for Teardown.
  bool mounted_ = false;
  bool tap_made_ = false;
  bool veth_made_ = false;
  std::string host_nft_table_;
};

}  // namespace ember::emberd
