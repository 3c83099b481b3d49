#include "rootfs/init/cmdline.h"

#include <gtest/gtest.h>

namespace ember::init {
namespace {

TEST(Cmdline, LastValueOfAKeyWins) {
  Cmdline cmdline = Cmdline::Parse("console=ttyS0 ip=1 root=/dev/vda ip=2\n");
  EXPECT_EQ(cmdline.Get("ip"), "2");
  EXPECT_EQ(cmdline.Get("root"), "/dev/vda");
  EXPECT_EQ(cmdline.Get("missing"), std::nullopt);
}

TEST(Cmdline, QuotesGroupSpacesAndAreDropped) {
  Cmdline cmdline = Cmdline::Parse(R"(a=1 ember.agent_args="--port 1024  --verbose" b=2)");
  EXPECT_EQ(cmdline.Get("ember.agent_args"), "--port 1024  --verbose");
  EXPECT_EQ(cmdline.Get("b"), "2");
}

TEST(Cmdline, BareWordHasTheEmptyValue) { EXPECT_EQ(Cmdline::Parse("quiet ro").Get("ro"), ""); }

TEST(Cmdline, WordsAfterDoubleDashBelongToInit) {
  Cmdline cmdline = Cmdline::Parse("ip=1 -- ip=2 single");
  EXPECT_EQ(cmdline.Get("ip"), "1");
  EXPECT_EQ(cmdline.Get("single"), std::nullopt);
}

TEST(Cmdline, ValueKeepsLaterEqualsSigns) {
  EXPECT_EQ(Cmdline::Parse("ember.ip=10.0.0.2/24,gw=10.0.0.1").Get("ember.ip"),
            "10.0.0.2/24,gw=10.0.0.1");
}

}  // namespace
}  // namespace ember::init
