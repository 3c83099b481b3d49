// emberd's clone network server (needs root): networks made in a helper process on request,
// spares made ahead, everything removed when emberd closes it, and what a killed server left
// behind removed by the next one at its start.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <memory>

#include "tests/clone_network/world.h"
#include "tests/support/files.h"
#include "vmm/emberd/clone_network/network_server.h"

namespace ember::testing {
namespace {

using emberd::CloneNetworkServer;
using emberd::CloneNetworkServerConfig;
using emberd::CloneNetworkShape;
using emberd::Ipv4Cidr;
using emberd::PreparedNetwork;

class CloneNetworkServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = EnterTestHost(); !why.empty()) GTEST_SKIP() << why;
    dir_ = std::make_unique<ScopedTempDir>("fnnet-server");
  }

  CloneNetworkServerConfig Config(bool egress = true) const {
    CloneNetworkServerConfig config;
    config.netns_dir = dir_->path() + "/netns";
    if (egress)
      config.egress = emberd::EgressPoolConfig{*Ipv4Cidr::Parse("10.214.0.0/24"), "fnsrv"};
    return config;
  }

  static CloneNetworkShape Shape(bool egress = true) {
    return CloneNetworkShape{"tap0", *Ipv4Cidr::Parse("172.16.0.1/30"), egress};
  }

  // Ends the server and waits for its helper to be gone.
  static void Stop(std::unique_ptr<CloneNetworkServer>& server) {
    const pid_t helper = server->helper_pid();
    server.reset();
    int status = 0;
    ASSERT_EQ(::waitpid(helper, &status, 0), helper);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }

  std::size_t Mounted() const {
    std::size_t count = 0;
    for ([[maybe_unused]] const auto& entry :
         std::filesystem::directory_iterator(dir_->path() + "/netns")) {
      ++count;
    }
    return count;
  }

  std::unique_ptr<ScopedTempDir> dir_;
};

TEST_F(CloneNetworkServerTest, PreparedNetworkIsJoinableByPathAndReleaseRemovesIt) {
  const HostState before = ReadHostState();
  auto server = CloneNetworkServer::Start(Config());
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<PreparedNetwork> network = (*server)->Prepare(Shape());
  ASSERT_TRUE(network.ok()) << network.status();
  EXPECT_EQ(network->netns_path, dir_->path() + "/netns/" + network->id);
  {
    base::UniqueFd netns(::open(network->netns_path.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(netns) << network->netns_path;
    EXPECT_EQ(LinkNames(netns.Get()), (std::set<std::string>{"lo", "tap0", "egress0"}));
  }
  EXPECT_TRUE((*server)->Release(network->id).ok());
  EXPECT_FALSE(std::filesystem::exists(network->netns_path));
  EXPECT_EQ((*server)->Release(network->id).code(), absl::StatusCode::kNotFound);
  Stop(*server);
  EXPECT_EQ(ReadHostState(), before);
}

TEST_F(CloneNetworkServerTest, SparesAreMadeAheadAndAllGoWithTheServer) {
  const HostState before = ReadHostState();
  auto server = CloneNetworkServer::Start(Config());
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<PreparedNetwork> first = (*server)->Prepare(Shape());
  ASSERT_TRUE(first.ok()) << first.status();
  // The next request is answered after the spare of this shape is made: it gets that one.
  absl::StatusOr<PreparedNetwork> second = (*server)->Prepare(Shape());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->id, "n1");  // made ahead, right after the first
  // Both held and a new spare.
  EXPECT_TRUE((*server)->Release("n0").ok());
  for (int i = 0; i < 100 && Mounted() != 2; ++i) usleep(10'000);
  EXPECT_EQ(Mounted(), 2u);
  Stop(*server);
  EXPECT_EQ(Mounted(), 0u);
  const HostState after = ReadHostState();
  EXPECT_EQ(after, before) << "before:\n" << Describe(before) << "\nafter:\n" << Describe(after);
}

TEST_F(CloneNetworkServerTest, WhatAKilledServerLeftIsRemovedByTheNextAtItsStart) {
  const HostState before = ReadHostState();
  auto server = CloneNetworkServer::Start(Config());
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->Prepare(Shape()).ok());
  ASSERT_TRUE((*server)->Prepare(Shape()).ok());
  const pid_t helper = (*server)->helper_pid();
  ASSERT_EQ(::kill(helper, SIGKILL), 0);
  ASSERT_EQ(::waitpid(helper, nullptr, 0), helper);
  server->reset();
  const HostState left = ReadHostState();
  EXPECT_NE(left, before);  // mounts, host veth ends and nftables tables remain
  EXPECT_GE(Mounted(), 2u);

  auto next = CloneNetworkServer::Start(Config());
  ASSERT_TRUE(next.ok()) << next.status();
  const HostState after = ReadHostState();
  EXPECT_EQ(after, before) << "before:\n" << Describe(before) << "\nafter:\n" << Describe(after);
  EXPECT_EQ(Mounted(), 0u);
  Stop(*next);
}

TEST_F(CloneNetworkServerTest, EgressWithoutAPoolIsRefused) {
  auto server = CloneNetworkServer::Start(Config(/*egress=*/false));
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<PreparedNetwork> network = (*server)->Prepare(Shape(/*egress=*/true));
  ASSERT_FALSE(network.ok());
  EXPECT_EQ(network.status().code(), absl::StatusCode::kFailedPrecondition) << network.status();
  EXPECT_TRUE((*server)->Prepare(Shape(/*egress=*/false)).ok());
  Stop(*server);
}

TEST_F(CloneNetworkServerTest, BadTapNameIsRefusedAndTheServerGoesOn) {
  auto server = CloneNetworkServer::Start(Config());
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<PreparedNetwork> network =
      (*server)->Prepare(CloneNetworkShape{"no/such", std::nullopt, false});
  ASSERT_FALSE(network.ok());
  EXPECT_EQ(network.status().code(), absl::StatusCode::kInvalidArgument) << network.status();
  EXPECT_TRUE((*server)->Prepare(Shape()).ok());
  Stop(*server);
}

}  // namespace
}  // namespace ember::testing
