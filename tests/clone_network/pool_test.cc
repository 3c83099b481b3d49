// Clone networks' addressing: IPv4 prefixes and the egress pool's slots (no root needed).
#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "vmm/emberd/clone_network/egress_pool.h"
#include "vmm/emberd/clone_network/ipv4.h"

namespace ember::emberd {
namespace {

TEST(Ipv4Cidr, ParsesAddressAndPrefix) {
  absl::StatusOr<Ipv4Cidr> cidr = Ipv4Cidr::Parse("10.200.3.1/30");
  ASSERT_TRUE(cidr.ok()) << cidr.status();
  EXPECT_EQ(cidr->address, (10u << 24) | (200u << 16) | (3u << 8) | 1u);
  EXPECT_EQ(cidr->prefix, 30);
  EXPECT_EQ(cidr->ToString(), "10.200.3.1/30");
  EXPECT_EQ(cidr->Netmask(), 0xfffffffcu);
  EXPECT_EQ(Ipv4Cidr::Parse("172.16.0.2")->prefix, 32);
}

TEST(Ipv4Cidr, MalformedTextIsRefusedNamingIt) {
  for (const char* text : {"", "10.0.0", "10.0.0.256/8", "10.0.0.1/33", "10.0.0.1/", "10.0.0.1/x",
                           "10.0.0.1/3x", "a.b.c.d"}) {
    absl::StatusOr<Ipv4Cidr> cidr = Ipv4Cidr::Parse(text);
    ASSERT_FALSE(cidr.ok()) << text;
    EXPECT_EQ(cidr.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(cidr.status().message().find(std::string("\"") + text + "\""), std::string::npos)
        << cidr.status();
  }
}

EgressPoolConfig Config(const char* subnet, const char* prefix = "fnp") {
  return EgressPoolConfig{*Ipv4Cidr::Parse(subnet), prefix};
}

TEST(EgressPool, SlotsAreConsecutiveSlash30sWithNumberedVeths) {
  auto pool = EgressPool::Create(Config("10.213.0.0/24"));
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ((*pool)->capacity(), 64u);
  absl::StatusOr<EgressLease> first = (*pool)->Acquire();
  absl::StatusOr<EgressLease> second = (*pool)->Acquire();
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->host_veth(), "fnp0");
  EXPECT_EQ(first->host_address().ToString(), "10.213.0.1/30");
  EXPECT_EQ(first->clone_address().ToString(), "10.213.0.2/30");
  EXPECT_EQ(second->host_veth(), "fnp1");
  EXPECT_EQ(second->host_address().ToString(), "10.213.0.5/30");
  EXPECT_EQ(second->clone_address().ToString(), "10.213.0.6/30");
}

TEST(EgressPool, FullPoolIsResourceExhaustedUntilALeaseEnds) {
  auto pool = EgressPool::Create(Config("10.213.0.0/29"));
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::vector<EgressLease> leases;
  for (int i = 0; i < 2; ++i) leases.push_back(*(*pool)->Acquire());
  absl::StatusOr<EgressLease> more = (*pool)->Acquire();
  ASSERT_FALSE(more.ok());
  EXPECT_EQ(more.status().code(), absl::StatusCode::kResourceExhausted);
  leases.erase(leases.begin());  // slot 0 is free again
  absl::StatusOr<EgressLease> again = (*pool)->Acquire();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->host_veth(), "fnp0");
}

TEST(EgressPool, MovedLeaseFreesItsSlotOnce) {
  auto pool = EgressPool::Create(Config("10.213.0.0/30"));
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::optional<EgressLease> holder;
  {
    EgressLease lease = *(*pool)->Acquire();
    holder.emplace(std::move(lease));
  }  // the moved-from lease frees nothing
  EXPECT_FALSE((*pool)->Acquire().ok());
  holder.reset();
  EXPECT_TRUE((*pool)->Acquire().ok());
}

TEST(EgressPool, BadConfigurationIsRefused) {
  EXPECT_EQ(EgressPool::Create(Config("10.213.0.0/31")).status().code(),
            absl::StatusCode::kInvalidArgument);  // smaller than a /30
  EXPECT_EQ(EgressPool::Create(Config("10.213.0.4/24")).status().code(),
            absl::StatusCode::kInvalidArgument);  // host bits set
  EXPECT_EQ(EgressPool::Create(Config("10.213.0.0/16", "averylongprefix")).status().code(),
            absl::StatusCode::kInvalidArgument);  // names past 15 characters
  EXPECT_EQ(EgressPool::Create(Config("10.213.0.0/24", "")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ember::emberd
