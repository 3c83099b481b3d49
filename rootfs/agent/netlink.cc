#include "rootfs/agent/netlink.h"

#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "vmm/base/status.h"

namespace ember::agent {
namespace {

constexpr std::size_t kAlign = 4;  // NLMSG_ALIGNTO and RTA_ALIGNTO

std::size_t Aligned(std::size_t size) { return (size + kAlign - 1) & ~(kAlign - 1); }

// Builds one netlink message: the header, a fixed body, then attributes, each padded.
class MessageBuilder {
 public:
  MessageBuilder(std::uint16_t type, std::uint16_t flags) {
    nlmsghdr header{};
    header.nlmsg_type = type;
    header.nlmsg_flags = static_cast<std::uint16_t>(flags | NLM_F_REQUEST);
    Append(&header, sizeof(header));
  }
  template <typename T>
  MessageBuilder& Body(const T& body) {
    Append(&body, sizeof(body));
    return *this;
  }
  MessageBuilder& Attr(std::uint16_t type, const void* data, std::size_t size) {
    rtattr attr{};
    attr.rta_len = static_cast<std::uint16_t>(sizeof(attr) + size);
    attr.rta_type = type;
    Append(&attr, sizeof(attr));
    Append(data, size);
    return *this;
  }
  std::string Finish(std::uint32_t seq) {
    nlmsghdr header{};
    std::memcpy(&header, bytes_.data(), sizeof(header));
    header.nlmsg_len = static_cast<std::uint32_t>(bytes_.size());
    header.nlmsg_seq = seq;
    std::memcpy(bytes_.data(), &header, sizeof(header));
    return bytes_;
  }

 private:
  void Append(const void* data, std::size_t size) {
    std::size_t at = bytes_.size();
    bytes_.resize(at + Aligned(size), '\0');
    std::memcpy(bytes_.data() + at, data, size);
  }
  std::string bytes_;
};

// Walks the messages of one recv'd datagram.
template <typename Visit>
absl::Status ForEachMessage(const std::string& datagram, Visit visit) {
  std::size_t at = 0;
  while (at + sizeof(nlmsghdr) <= datagram.size()) {
    nlmsghdr header{};
    std::memcpy(&header, datagram.data() + at, sizeof(header));
    if (header.nlmsg_len < sizeof(header) || at + header.nlmsg_len > datagram.size()) {
      return absl::InternalError("netlink: a truncated message from the kernel");
    }
    EMBER_RETURN_IF_ERROR(visit(header, std::string_view(datagram).substr(at, header.nlmsg_len)));
    at += Aligned(header.nlmsg_len);
  }
  return absl::OkStatus();
}

// The errno of an NLMSG_ERROR message (0: an acknowledgement).
int ErrorOf(std::string_view message) {
  nlmsgerr error{};
  if (message.size() < sizeof(nlmsghdr) + sizeof(error.error)) return EPROTO;
  std::memcpy(&error.error, message.data() + sizeof(nlmsghdr), sizeof(error.error));
  return -error.error;
}

}  // namespace

absl::StatusOr<Netlink> Netlink::Open() {
  base::UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd.Valid()) return base::ErrnoError("socket", "NETLINK_ROUTE");
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  // sockaddr_nl is the sockaddr of AF_NETLINK: the kernel reads it by family.
  if (::bind(fd.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return base::ErrnoError("bind", "NETLINK_ROUTE");
  }
  return Netlink(std::move(fd));
}

absl::Status Netlink::Request(std::string message, const std::string& what) {
  const std::uint32_t seq = seq_++;
  nlmsghdr header{};
  std::memcpy(&header, message.data(), sizeof(header));
  header.nlmsg_seq = seq;
  header.nlmsg_flags = static_cast<std::uint16_t>(header.nlmsg_flags | NLM_F_ACK);
  std::memcpy(message.data(), &header, sizeof(header));
  if (::send(fd_.Get(), message.data(), message.size(), 0) < 0) {
    return base::ErrnoError("netlink send", what);
  }
  std::string datagram(8192, '\0');
  while (true) {
    ssize_t n = ::recv(fd_.Get(), datagram.data(), datagram.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return base::ErrnoError("netlink recv", what);
    bool done = false;
    int err = 0;
    EMBER_RETURN_IF_ERROR(ForEachMessage(
        datagram.substr(0, static_cast<std::size_t>(n)),
        [&](const nlmsghdr& h, std::string_view bytes) {
          if (h.nlmsg_seq == seq && h.nlmsg_type == NLMSG_ERROR) {
            done = true;
            err = ErrorOf(bytes);
          }
          return absl::OkStatus();
        }));
    if (done) return err == 0 ? absl::OkStatus() : base::ErrnoError(err, what);
  }
}

absl::StatusOr<std::vector<std::string>> Netlink::Dump(std::string message,
                                                       const std::string& what) {
  const std::uint32_t seq = seq_++;
  nlmsghdr header{};
  std::memcpy(&header, message.data(), sizeof(header));
  header.nlmsg_seq = seq;
  std::memcpy(message.data(), &header, sizeof(header));
  if (::send(fd_.Get(), message.data(), message.size(), 0) < 0) {
    return base::ErrnoError("netlink send", what);
  }
  std::vector<std::string> messages;
  std::string datagram(32768, '\0');
  bool done = false;
  while (!done) {
    ssize_t n = ::recv(fd_.Get(), datagram.data(), datagram.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return base::ErrnoError("netlink recv", what);
    EMBER_RETURN_IF_ERROR(ForEachMessage(
        datagram.substr(0, static_cast<std::size_t>(n)),
        [&](const nlmsghdr& h, std::string_view bytes) -> absl::Status {
          if (h.nlmsg_seq != seq) return absl::OkStatus();
          if (h.nlmsg_type == NLMSG_DONE) {
            done = true;
          } else if (h.nlmsg_type == NLMSG_ERROR) {
            done = true;
            if (int err = ErrorOf(bytes); err != 0) return base::ErrnoError(err, what);
          } else {
            messages.emplace_back(bytes);
          }
          return absl::OkStatus();
        }));
  }
  return messages;
}

absl::Status Netlink::SetLinkUp(int index, bool up) {
  ifinfomsg info{};
  info.ifi_family = AF_UNSPEC;
  info.ifi_index = index;
  info.ifi_flags = up ? static_cast<unsigned>(IFF_UP) : 0u;
  info.ifi_change = IFF_UP;
  return Request(MessageBuilder(RTM_NEWLINK, 0).Body(info).Finish(0),
                 std::string("RTM_NEWLINK (") + (up ? "up" : "down") + ")");
}

absl::Status Netlink::SetMac(int index, const std::array<std::uint8_t, 6>& mac) {
  ifinfomsg info{};
  info.ifi_family = AF_UNSPEC;
  info.ifi_index = index;
  return Request(
      MessageBuilder(RTM_NEWLINK, 0).Body(info).Attr(IFLA_ADDRESS, mac.data(), mac.size()).Finish(0),
      "RTM_NEWLINK (mac address)");
}

absl::Status Netlink::FlushIpv4(int index) {
  ifaddrmsg query{};
  query.ifa_family = AF_INET;
  EMBER_ASSIGN_OR_RETURN(
      std::vector<std::string> addresses,
      Dump(MessageBuilder(RTM_GETADDR, NLM_F_DUMP).Body(query).Finish(0), "RTM_GETADDR"));
  for (const std::string& message : addresses) {
    std::size_t body_at = sizeof(nlmsghdr);
    if (message.size() < body_at + sizeof(ifaddrmsg)) continue;
    ifaddrmsg address{};
    std::memcpy(&address, message.data() + body_at, sizeof(address));
    if (static_cast<int>(address.ifa_index) != index || address.ifa_family != AF_INET) continue;
    // The deletion names the address by the same attributes the dump gave it.
    MessageBuilder remove(RTM_DELADDR, 0);
    remove.Body(address);
    std::size_t at = body_at + Aligned(sizeof(ifaddrmsg));
    while (at + sizeof(rtattr) <= message.size()) {
      rtattr attr{};
      std::memcpy(&attr, message.data() + at, sizeof(attr));
      if (attr.rta_len < sizeof(attr) || at + attr.rta_len > message.size()) break;
      if (attr.rta_type == IFA_LOCAL || attr.rta_type == IFA_ADDRESS) {
        remove.Attr(attr.rta_type, message.data() + at + sizeof(attr), attr.rta_len - sizeof(attr));
      }
      at += Aligned(attr.rta_len);
    }
    absl::Status removed = Request(remove.Finish(0), "RTM_DELADDR");
    // A secondary address goes with its primary: already gone is no error.
    if (!removed.ok() && removed.code() != absl::StatusCode::kNotFound &&
        removed.code() != absl::StatusCode::kFailedPrecondition) {
      return removed;
    }
  }
  return absl::OkStatus();
}

absl::Status Netlink::AddIpv4(int index, in_addr address, int prefix) {
  ifaddrmsg info{};
  info.ifa_family = AF_INET;
  info.ifa_prefixlen = static_cast<unsigned char>(prefix);
  info.ifa_index = static_cast<std::uint32_t>(index);
  in_addr broadcast = address;
  if (prefix < 31) {
    std::uint32_t host_mask = prefix == 0 ? ~0u : (1u << (32 - prefix)) - 1;
    broadcast.s_addr = htonl(ntohl(address.s_addr) | host_mask);
  }
  MessageBuilder add(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE);
  add.Body(info)
      .Attr(IFA_LOCAL, &address, sizeof(address))
      .Attr(IFA_ADDRESS, &address, sizeof(address));
  if (prefix < 31) add.Attr(IFA_BROADCAST, &broadcast, sizeof(broadcast));
  return Request(add.Finish(0), "RTM_NEWADDR");
}

absl::Status Netlink::ReplaceDefaultRoute(int index, in_addr gateway) {
  rtmsg route{};
  route.rtm_family = AF_INET;
  route.rtm_table = RT_TABLE_MAIN;
  route.rtm_protocol = RTPROT_BOOT;
  route.rtm_scope = RT_SCOPE_UNIVERSE;
  route.rtm_type = RTN_UNICAST;
  std::uint32_t oif = static_cast<std::uint32_t>(index);
  return Request(MessageBuilder(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE)
                     .Body(route)
                     .Attr(RTA_GATEWAY, &gateway, sizeof(gateway))
                     .Attr(RTA_OIF, &oif, sizeof(oif))
                     .Finish(0),
                 "RTM_NEWROUTE (default)");
}

}  // namespace ember::agent
