#pragma once

// What the clone-network tests share: a private stand-in for the host, a way to look at it
// from outside the library under test (the `ip` and `nft` tools, /proc), and "the internet".
#include <sys/socket.h>
#include <sys/types.h>

#include <set>
#include <string>
#include <vector>

#include "tests/support/process.h"
#include "vmm/base/unique_fd.h"

namespace ember::testing {

// Moves the test process, on its first call, into network and mount namespaces of its own:
// its network namespace plays the host (its links and nftables ruleset are then exactly what
// the tests made, whatever else runs on the machine) and its private mounts keep the clones'
// name mounts from the host's. Turns IPv4 forwarding on there. Returns "" once inside, or why
// not (for the test to skip with). Call before starting threads.
[[nodiscard]] std::string EnterTestHost();

// `ip ARGS...` (split at spaces) in the calling thread's network namespace.
ProcessResult Ip(const std::string& args);
// The same, run inside the namespace `netns_fd`.
ProcessResult IpIn(int netns_fd, const std::string& args);
// The names of the links of `netns_fd` (or, with -1, of the calling thread's namespace).
std::set<std::string> LinkNames(int netns_fd = -1);

// Everything a clone network could leave behind on the test's host, seen from outside.
struct HostState {
  std::set<std::string> links;        // the host namespace's links
  std::string nft_ruleset;            // `nft list ruleset`
  std::set<std::string> nsfs_mounts;  // mount points of network namespaces (mountinfo)
  std::set<ino_t> reachable_netns;    // namespaces this process reaches: threads, fds, mounts
  friend bool operator==(const HostState&, const HostState&) = default;
};
HostState ReadHostState();
std::string Describe(const HostState& state);

// The inode number of the network namespace `netns_fd`.
ino_t NetnsInode(int netns_fd);
// Whether any process on the machine (its threads, fds) or any mount of this process still
// holds network namespace `inode`.
bool NetnsHeldAnywhere(ino_t inode);

// A namespace of its own one veth pair away from the test's host and routed by it: `address`
// on its eth0, `gateway` on the host's end `link` (both /`prefix`), the host's route to it
// through that link (replies need none: the host masquerades what it forwards to `gateway`).
// Removed when destroyed.
class RoutedNamespace {
 public:
  // ADD_FAILURE()s when it cannot be made.
  RoutedNamespace(std::string link, std::string gateway, std::string address, int prefix);
  ~RoutedNamespace();
  RoutedNamespace(const RoutedNamespace&) = delete;
  [[nodiscard]] int netns_fd() const { return netns_.Get(); }

 private:
  void Build(int prefix);
  const std::string link_;
  const std::string gateway_;
  const std::string address_;
  base::UniqueFd netns_;
};

// "The internet": what a clone's egress is for, at kInternetAddress (not a private range).
inline constexpr char kInternetAddress[] = "198.51.100.2";
inline constexpr char kInternetGateway[] = "198.51.100.1";
inline constexpr char kInternetLink[] = "fnnet-inet";
class Internet : public RoutedNamespace {
 public:
  Internet() : RoutedNamespace(kInternetLink, kInternetGateway, kInternetAddress, 24) {}
};

// A socket of `family` and `type` made in namespace `netns_fd` (it stays there, whatever
// thread uses it).
base::UniqueFd SocketIn(int netns_fd, int type, int family = AF_INET);

}  // namespace ember::testing
