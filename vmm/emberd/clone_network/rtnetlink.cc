#include "vmm/emberd/clone_network/rtnetlink.h"

#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "vmm/base/status.h"

namespace ember::emberd {
namespace {

// One netlink message under construction: a header, a fixed struct, then attributes, some
// nested. Offsets, not pointers, since the buffer grows.
class Message {
 public:
  Message(std::uint16_t type, std::uint16_t flags) {
    nlmsghdr header{};
    header.nlmsg_type = type;
    header.nlmsg_flags = static_cast<std::uint16_t>(NLM_F_REQUEST | NLM_F_ACK | flags);
    Append(&header, sizeof(header));
  }
  template <typename T>
  void AppendStruct(const T& value) {
    Append(&value, sizeof(value));
  }
  void Attribute(std::uint16_t type, const void* data, std::size_t size) {
    rtattr attr{};
    attr.rta_type = type;
    attr.rta_len = static_cast<std::uint16_t>(RTA_LENGTH(size));
    Append(&attr, sizeof(attr));
    Append(data, size);
  }
  void Attribute(std::uint16_t type, const std::string& text) {
    Attribute(type, text.c_str(), text.size() + 1);  // with its NUL
  }
  void Attribute32(std::uint16_t type, std::uint32_t value) {
    Attribute(type, &value, sizeof(value));
  }
  // Starts a nested attribute; End(offset) closes it.
  [[nodiscard]] std::size_t Begin(std::uint16_t type) {
    std::size_t at = bytes_.size();
    Attribute(type, nullptr, 0);
    return at;
  }
  void End(std::size_t at) {
    const auto length = static_cast<std::uint16_t>(bytes_.size() - at);
    std::memcpy(bytes_.data() + at + offsetof(rtattr, rta_len), &length, sizeof(length));
  }
  std::vector<std::uint8_t> Take() { return std::move(bytes_); }

 private:
  void Append(const void* data, std::size_t size) {
    const auto* bytes = static_cast<const std::uint8_t*>(data);
    if (size > 0) bytes_.insert(bytes_.end(), bytes, bytes + size);
    bytes_.resize(NLMSG_ALIGN(bytes_.size()));
  }
  std::vector<std::uint8_t> bytes_;
};

absl::Status NetlinkError(int err, const std::string& what, const std::string& object) {
  if (err == ENODEV) return absl::NotFoundError(what + " " + object + ": no such link");
  if (err == EEXIST) return absl::AlreadyExistsError(what + " " + object + ": exists already");
  return base::ErrnoError(err, what, object);
}

}  // namespace

absl::StatusOr<RtNetlink> RtNetlink::Open() {
  base::UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd) return base::ErrnoError("socket(AF_NETLINK, NETLINK_ROUTE)");
  // Errors come back with the request's header only, not the whole request.
  int one = 1;
  (void)::setsockopt(fd.Get(), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
  return RtNetlink(std::move(fd));
}

absl::Status RtNetlink::Transact(std::vector<std::uint8_t> message, const std::string& what,
                                 const std::string& object, std::vector<std::uint8_t>* reply) {
  nlmsghdr header{};
  std::memcpy(&header, message.data(), sizeof(header));
  header.nlmsg_len = static_cast<std::uint32_t>(message.size());
  header.nlmsg_seq = ++sequence_;
  std::memcpy(message.data(), &header, sizeof(header));
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  // sockaddr_nl is what sendto() takes through its generic pointer.
  if (::sendto(fd_.Get(), message.data(), message.size(), 0,
               reinterpret_cast<const sockaddr*>(&kernel),
               sizeof(kernel)) != static_cast<ssize_t>(message.size())) {
    return base::ErrnoError("send rtnetlink request", what + " " + object);
  }
  alignas(nlmsghdr) std::uint8_t buffer[16384];
  while (true) {
    ssize_t n = ::recv(fd_.Get(), buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return base::ErrnoError("receive rtnetlink answer", what + " " + object);
    // Walks the messages in the buffer (NLMSG_OK and NLMSG_NEXT's rule, without their casts).
    std::size_t at = 0;
    while (at + sizeof(nlmsghdr) <= static_cast<std::size_t>(n)) {
      nlmsghdr h{};
      std::memcpy(&h, buffer + at, sizeof(h));
      if (h.nlmsg_len < sizeof(nlmsghdr) || at + h.nlmsg_len > static_cast<std::size_t>(n)) break;
      const std::uint8_t* payload = buffer + at + NLMSG_HDRLEN;
      const std::size_t this_message = at;
      at += NLMSG_ALIGN(h.nlmsg_len);
      if (h.nlmsg_seq != sequence_) continue;  // a late answer to an earlier request
      if (h.nlmsg_type == NLMSG_ERROR) {
        if (h.nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) {
          return absl::InternalError(what + " " + object + ": short rtnetlink error message");
        }
        int err = 0;
        std::memcpy(&err, payload, sizeof(err));  // nlmsgerr.error comes first
        return err == 0 ? absl::OkStatus() : NetlinkError(-err, what, object);
      }
      if (reply != nullptr && reply->empty()) {
        reply->assign(buffer + this_message, buffer + this_message + h.nlmsg_len);
      }
    }
  }
}

absl::StatusOr<int> RtNetlink::LinkIndex(const std::string& name) {
  Message message(RTM_GETLINK, 0);
  ifinfomsg info{};
  info.ifi_family = AF_UNSPEC;
  message.AppendStruct(info);
  message.Attribute(IFLA_IFNAME, name);
  std::vector<std::uint8_t> reply;
  EMBER_RETURN_IF_ERROR(Transact(message.Take(), "look up link", name, &reply));
  if (reply.size() < NLMSG_LENGTH(sizeof(ifinfomsg))) {
    return absl::InternalError("look up link " + name + ": no link message in the answer");
  }
  std::memcpy(&info, reply.data() + NLMSG_HDRLEN, sizeof(info));
  return info.ifi_index;
}

absl::Status RtNetlink::SetUp(const std::string& name) {
  Message message(RTM_NEWLINK, 0);
  ifinfomsg info{};
  info.ifi_family = AF_UNSPEC;
  info.ifi_flags = IFF_UP;
  info.ifi_change = IFF_UP;
  message.AppendStruct(info);
  message.Attribute(IFLA_IFNAME, name);
  return Transact(message.Take(), "set link up", name);
}

absl::Status RtNetlink::AddAddress(const std::string& name, Ipv4Cidr cidr) {
  EMBER_ASSIGN_OR_RETURN(int index, LinkIndex(name));
  Message message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
  ifaddrmsg addr{};
  addr.ifa_family = AF_INET;
  addr.ifa_prefixlen = static_cast<std::uint8_t>(cidr.prefix);
  addr.ifa_scope = RT_SCOPE_UNIVERSE;
  addr.ifa_index = static_cast<std::uint32_t>(index);
  message.AppendStruct(addr);
  message.Attribute32(IFA_LOCAL, htonl(cidr.address));
  message.Attribute32(IFA_ADDRESS, htonl(cidr.address));
  return Transact(message.Take(), "add address " + cidr.ToString() + " to", name);
}

absl::Status RtNetlink::AddDefaultRoute(std::uint32_t gateway) {
  Message message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
  rtmsg route{};
  route.rtm_family = AF_INET;
  route.rtm_table = RT_TABLE_MAIN;
  route.rtm_protocol = RTPROT_BOOT;
  route.rtm_scope = RT_SCOPE_UNIVERSE;
  route.rtm_type = RTN_UNICAST;
  message.AppendStruct(route);
  message.Attribute32(RTA_GATEWAY, htonl(gateway));
  return Transact(message.Take(), "add default route via", Ipv4Cidr{gateway, 32}.AddressString());
}

absl::Status RtNetlink::CreateVethPair(const std::string& name, const std::string& peer,
                                       int peer_netns_fd) {
  Message message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  ifinfomsg info{};
  info.ifi_family = AF_UNSPEC;
  message.AppendStruct(info);
  message.Attribute(IFLA_IFNAME, name);
  const std::size_t link_info = message.Begin(IFLA_LINKINFO);
  message.Attribute(IFLA_INFO_KIND, std::string("veth"));
  const std::size_t data = message.Begin(IFLA_INFO_DATA);
  // VETH_INFO_PEER holds the peer's own ifinfomsg, then its attributes.
  const std::size_t peer_info = message.Begin(VETH_INFO_PEER);
  message.AppendStruct(info);
  message.Attribute(IFLA_IFNAME, peer);
  message.Attribute32(IFLA_NET_NS_FD, static_cast<std::uint32_t>(peer_netns_fd));
  message.End(peer_info);
  message.End(data);
  message.End(link_info);
  return Transact(message.Take(), "create veth pair", name + " (peer " + peer + ")");
}

absl::Status RtNetlink::DeleteLink(const std::string& name) {
  Message message(RTM_DELLINK, 0);
  ifinfomsg info{};
  info.ifi_family = AF_UNSPEC;
  message.AppendStruct(info);
  message.Attribute(IFLA_IFNAME, name);
  return Transact(message.Take(), "delete link", name);
}

}  // namespace ember::emberd
