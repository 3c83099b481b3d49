#include <gtest/gtest.h>

#include "rootfs/init/agent_supervisor.h"

namespace ember::init {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(RestartBackoff, QuickFailuresDoubleTheDelayUpToTheCap) {
  RestartBackoff backoff;
  EXPECT_EQ(backoff.Next(milliseconds(1)), milliseconds(100));
  EXPECT_EQ(backoff.Next(milliseconds(1)), milliseconds(200));
  EXPECT_EQ(backoff.Next(milliseconds(1)), milliseconds(400));
  for (int i = 0; i < 10; ++i) (void)backoff.Next(milliseconds(1));
  EXPECT_EQ(backoff.Next(milliseconds(1)), seconds(10));
}

TEST(RestartBackoff, ALongRunStartsOverAtTheFirstDelay) {
  RestartBackoff backoff;
  for (int i = 0; i < 5; ++i) (void)backoff.Next(milliseconds(1));
  EXPECT_EQ(backoff.Next(seconds(10)), milliseconds(100));
  EXPECT_EQ(backoff.Next(seconds(1)), milliseconds(200));
}

}  // namespace
}  // namespace ember::init
