#include "rootfs/agent/post_restore.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/random.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <cstring>
#include <string>
#include <vector>

#include "rootfs/agent/netlink.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::agent {
namespace {

absl::Status AddEntropy(const std::string& bytes) {
  if (bytes.size() > kMaxEntropyBytes) {
    return absl::InvalidArgumentError("entropy of " + std::to_string(bytes.size()) +
                                      " bytes is over the " + std::to_string(kMaxEntropyBytes) +
                                      "-byte limit");
  }
  base::UniqueFd random(::open("/dev/urandom", O_WRONLY | O_CLOEXEC));
  if (!random.Valid()) return base::ErrnoError("open", "/dev/urandom");
  // struct rand_pool_info ends in a flexible array: built as ints, as the kernel reads it.
  std::vector<int> info(2 + (bytes.size() + sizeof(int) - 1) / sizeof(int), 0);
  info[0] = static_cast<int>(bytes.size() * 8);  // entropy_count, in bits: credited
  info[1] = static_cast<int>(bytes.size());      // buf_size
  std::memcpy(info.data() + 2, bytes.data(), bytes.size());
  if (::ioctl(random.Get(), RNDADDENTROPY, info.data()) != 0) {
    return base::ErrnoError("ioctl(RNDADDENTROPY)", "/dev/urandom");
  }
  return absl::OkStatus();
}

absl::Status SetClock(std::uint64_t ns) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000u);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000u);
  if (::clock_settime(CLOCK_REALTIME, &ts) != 0) {
    return base::ErrnoError("clock_settime", "CLOCK_REALTIME");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::array<std::uint8_t, 6>> ParseMac(const std::string& text) {
  std::array<std::uint8_t, 6> mac{};
  auto bad = [&] { return absl::InvalidArgumentError("mac \"" + text + "\" is not aa:bb:cc:dd:ee:ff"); };
  if (text.size() != 17) return bad();
  for (std::size_t i = 0; i < 6; ++i) {
    const char* start = text.data() + i * 3;
    if (i < 5 && start[2] != ':') return bad();
    auto [end, ec] = std::from_chars(start, start + 2, mac[i], 16);
    if (ec != std::errc() || end != start + 2) return bad();
  }
  return mac;
}

absl::Status ApplyNetwork(Netlink& netlink, const v1::NetworkSettings& settings) {
  const std::string& name = settings.interface();
  unsigned index = ::if_nametoindex(name.c_str());
  if (index == 0) return absl::NotFoundError("network interface \"" + name + "\" does not exist");
  const int ifindex = static_cast<int>(index);
  auto named = [&name](absl::Status status) {
    return status.ok() ? status : absl::Status(status.code(), name + ": " + std::string(status.message()));
  };
  in_addr address{};
  int prefix = 32;
  if (!settings.address_cidr().empty()) {
    const std::string& cidr = settings.address_cidr();
    std::size_t slash = cidr.find('/');
    std::string host = cidr.substr(0, slash);
    bool ok = ::inet_pton(AF_INET, host.c_str(), &address) == 1;
    if (ok && slash != std::string::npos) {
      auto [end, ec] = std::from_chars(cidr.data() + slash + 1, cidr.data() + cidr.size(), prefix);
      ok = ec == std::errc() && end == cidr.data() + cidr.size() && prefix >= 0 && prefix <= 32;
    }
    if (!ok) return absl::InvalidArgumentError(name + ": address \"" + cidr + "\" is no IPv4 CIDR");
  }
  in_addr gateway{};
  if (!settings.gateway().empty() && ::inet_pton(AF_INET, settings.gateway().c_str(), &gateway) != 1) {
    return absl::InvalidArgumentError(name + ": gateway \"" + settings.gateway() +
                                      "\" is no IPv4 address");
  }
  if (!settings.mac().empty()) {
    EMBER_ASSIGN_OR_RETURN(auto mac, ParseMac(settings.mac()));
    // Most drivers take a new address only while the link is down.
    EMBER_RETURN_IF_ERROR(named(netlink.SetLinkUp(ifindex, false)));
    EMBER_RETURN_IF_ERROR(named(netlink.SetMac(ifindex, mac)));
  }
  if (!settings.address_cidr().empty()) {
    EMBER_RETURN_IF_ERROR(named(netlink.FlushIpv4(ifindex)));
    EMBER_RETURN_IF_ERROR(named(netlink.AddIpv4(ifindex, address, prefix)));
  }
  EMBER_RETURN_IF_ERROR(named(netlink.SetLinkUp(ifindex, true)));
  if (!settings.gateway().empty()) {
    EMBER_RETURN_IF_ERROR(named(netlink.ReplaceDefaultRoute(ifindex, gateway)));
  }
  return absl::OkStatus();
}

}  // namespace

std::uint64_t Fnv1a64(std::string_view bytes) {
  std::uint64_t hash = 0xcbf29ce484222325u;
  for (char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3u;
  }
  return hash;
}

absl::StatusOr<v1::PostRestoreResult> ApplyPostRestore(const v1::PostRestoreRequest& request,
                                                       bool set_clock) {
  std::vector<absl::Status> failures;
  auto attempt = [&failures](absl::Status status) {
    if (!status.ok()) failures.push_back(std::move(status));
  };
  if (!request.entropy().empty()) attempt(AddEntropy(request.entropy()));
  if (request.wall_clock_ns() != 0 && set_clock) attempt(SetClock(request.wall_clock_ns()));
  if (!request.hostname().empty() &&
      ::sethostname(request.hostname().data(), request.hostname().size()) != 0) {
    attempt(base::ErrnoError("sethostname", request.hostname()));
  }
  if (!request.networks().empty()) {
    absl::StatusOr<Netlink> netlink = Netlink::Open();
    if (!netlink.ok()) {
      attempt(netlink.status());
    } else {
      for (const v1::NetworkSettings& settings : request.networks()) {
        attempt(ApplyNetwork(*netlink, settings));
      }
    }
  }
  if (!failures.empty()) {
    std::string message = "post-restore:";
    for (const absl::Status& failure : failures) message += " " + std::string(failure.message()) + ";";
    message.pop_back();
    return absl::Status(failures.front().code(), message);
  }
  v1::PostRestoreResult result;
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  result.set_wall_clock_ns(static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000u +
                           static_cast<std::uint64_t>(now.tv_nsec));
  result.set_entropy_bytes(static_cast<std::uint32_t>(request.entropy().size()));
  result.set_entropy_fnv1a(Fnv1a64(request.entropy()));
  return result;
}

}  // namespace ember::agent
