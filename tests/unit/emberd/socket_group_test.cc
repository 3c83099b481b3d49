#include "vmm/emberd/socket_group.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vmm/base/unique_fd.h"

namespace ember::emberd {
namespace {

constexpr gid_t kGroup = 4242;

TEST(PeerMayCall, RootMayCallWhateverItsGroups) {
  EXPECT_TRUE(PeerMayCall({1, 0, 0, {}}, kGroup));
}

TEST(PeerMayCall, AMemberByPrimaryOrSupplementaryGroupMayCall) {
  EXPECT_TRUE(PeerMayCall({1, 1000, kGroup, {}}, kGroup));
  EXPECT_TRUE(PeerMayCall({1, 1000, 1000, {27, kGroup}}, kGroup));
}

TEST(PeerMayCall, ANonMemberIsRefused) {
  EXPECT_FALSE(PeerMayCall({1, 1000, 1000, {27, 100}}, kGroup));
}

TEST(PeerMayCall, WithoutAGroupOnlyRootAndEmberdsOwnUidMayCall) {
  EXPECT_TRUE(PeerMayCall({1, 0, 0, {}}, std::nullopt));
  EXPECT_TRUE(PeerMayCall({1, 1000, 1000, {}}, std::nullopt, 1000));
  EXPECT_FALSE(PeerMayCall({1, 1001, kGroup, {kGroup}}, std::nullopt, 1000));
}

TEST(ReadPeerCredentials, ReadsWhatTheKernelRecordedForThePeer) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  base::UniqueFd ours(fds[0]), theirs(fds[1]);
  absl::StatusOr<PeerCredentials> peer = ReadPeerCredentials(ours.Get());
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->pid, ::getpid());
  EXPECT_EQ(peer->uid, ::geteuid());
  EXPECT_EQ(peer->gid, ::getegid());
  std::vector<gid_t> groups(static_cast<std::size_t>(::getgroups(0, nullptr)));
  ASSERT_EQ(::getgroups(static_cast<int>(groups.size()), groups.data()),
            static_cast<int>(groups.size()));
  EXPECT_EQ(peer->groups.size(), groups.size());
}

TEST(ResolveGroup, TakesANumberOrAName) {
  EXPECT_EQ(ResolveGroup("4242").value_or(0), 4242u);
  EXPECT_EQ(ResolveGroup("root").value_or(1), 0u);
  EXPECT_EQ(ResolveGroup("no-such-group-ember").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ember::emberd
