// Userfaultfd restores of the counter guest (--restore-mem-backend uffd), the working set the
// first one records and later ones prefetch, on real KVM through the real ember-vmm.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <iterator>
#include <regex>

#include "snapshot/working_set.h"
#include "tests/support/kvm_available.h"
#include "tests/support/process.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A metric's value in ember-vmm's metrics JSON ("name": N), or -1 when absent.
long long Metric(const std::string& json, const std::string& name) {
  std::string needle = "\"" + name + "\":";
  std::size_t at = json.find(needle);
  if (at == std::string::npos) return -1;
  long long value = -1;
  std::from_chars(json.data() + at + needle.size(), json.data() + json.size(), value);
  return value;
}

struct CounterSnapshot {
  std::string dir;
  std::string state;
  std::string memory;
};

// The counter scenario snapshotted (SIGUSR1) once it has counted to `at`; the original VMM
// is then killed, so only the files remain.
CounterSnapshot SnapshotCounterAt(int at) {
  CounterSnapshot snap;
  std::string marker = WriteTempFile("marker", "");
  snap.dir = marker.substr(0, marker.rfind('/'));
  snap.state = snap.dir + "/vm.state";
  snap.memory = snap.dir + "/vm.mem";
  std::string log = snap.dir + "/original.log";
  std::string config = WriteTempFile(
      "vm.json", R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=counter"}})");
  Process vmm({BinPath("ember-vmm"), "--config", config, "--snapshot-path", snap.state,
               "--snapshot-mem-path", snap.memory, "--log-path", log});
  EXPECT_TRUE(vmm.WaitForOutput("count " + std::to_string(at) + "\n", seconds(60)));
  vmm.Signal(SIGUSR1);
  for (int i = 0; i < 200 && Slurp(log).find("snapshot written") == std::string::npos; ++i) {
    usleep(50'000);
  }
  vmm.Signal(SIGKILL);
  vmm.Wait(seconds(10));
  EXPECT_NE(Slurp(log).find("snapshot written"), std::string::npos) << Slurp(log);
  return snap;
}

struct UffdRun {
  ProcessResult result;
  std::string metrics;
};

UffdRun RestoreWithUffd(const CounterSnapshot& snap, const std::vector<std::string>& extra,
                        const std::string& name) {
  std::vector<std::string> args = {BinPath("ember-vmm"), "--restore-from", snap.state,
                                   "--restore-mem", snap.memory, "--restore-mem-backend", "uffd",
                                   "--metrics-path", snap.dir + "/" + name + ".metrics.json"};
  args.insert(args.end(), extra.begin(), extra.end());
  UffdRun run;
  run.result = RunProcess(args, seconds(120));
  run.metrics = Slurp(snap.dir + "/" + name + ".metrics.json");
  return run;
}

void ExpectCountedOnAndPassed(const ProcessResult& result, int snapshot_at) {
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out.find("Ember test guest"), std::string::npos) << "the guest rebooted";
  std::smatch first;
  ASSERT_TRUE(std::regex_search(result.out, first, std::regex(R"(count (\d+)\n)")))
      << result.out;
  EXPECT_GE(std::stoi(first[1]), snapshot_at);
  EXPECT_LE(std::stoi(first[1]), snapshot_at + 2);
  EXPECT_NE(result.out.find("count 40\nchecksum ok\nPASS counter\n"), std::string::npos)
      << result.out;
}

class UffdSnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override { EMBER_REQUIRE_KVM(); }
};

TEST_F(UffdSnapshotTest, UffdRestoreCountsOnPassesItsChecksumAndRecordsItsWorkingSet) {
  CounterSnapshot snap = SnapshotCounterAt(3);
  UffdRun run = RestoreWithUffd(snap, {}, "first");
  ExpectCountedOnAndPassed(run.result, 3);
  // Every page came through the page server, and the set it wrote is exactly those pages.
  long long served = Metric(run.metrics, "page_faults_served");
  EXPECT_GT(served, 0) << run.metrics;
  auto set = snapshot::DecodeWorkingSet(Slurp(snap.memory + ".ws"));
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_FALSE(set->runs.empty());
  EXPECT_EQ(static_cast<long long>(set->page_count()), served);
  EXPECT_EQ(Metric(run.metrics, "working_set_pages"), served);
}

TEST_F(UffdSnapshotTest, PrefetchedRestorePassesAndFindsTheRecordedPagesInPlace) {
  CounterSnapshot snap = SnapshotCounterAt(3);
  UffdRun first = RestoreWithUffd(snap, {}, "first");
  ASSERT_EQ(first.result.exit_code, 0) << first.result.err;
  long long recorded = Metric(first.metrics, "working_set_pages");
  ASSERT_GT(recorded, 0) << first.metrics;
  std::string set_before = Slurp(snap.memory + ".ws");

  UffdRun second = RestoreWithUffd(snap, {"--prefetch-working-set"}, "second");
  ExpectCountedOnAndPassed(second.result, 3);
  EXPECT_EQ(Metric(second.metrics, "prefetched_pages"), recorded) << second.metrics;
  // The same guest run touches the same pages: almost none are left to fault in.
  long long faults = Metric(second.metrics, "page_faults_served");
  EXPECT_GE(faults, 0);
  EXPECT_LT(faults * 10, recorded) << "prefetch left " << faults << " of " << recorded;
  // A prefetching restore uses the set and does not overwrite it.
  EXPECT_EQ(Slurp(snap.memory + ".ws"), set_before);
}

// A bad working-set file: exit 2 and one clear error line, before the guest runs.
void ExpectWorkingSetRefused(const CounterSnapshot& snap, const std::string& ws_path,
                             const std::string& expected) {
  ProcessResult result = RunProcess(
      {BinPath("ember-vmm"), "--restore-from", snap.state, "--restore-mem", snap.memory,
       "--restore-mem-backend", "uffd", "--prefetch-working-set", "--working-set", ws_path},
      seconds(30));
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  EXPECT_NE(result.err.find(expected), std::string::npos) << result.err;
  EXPECT_EQ(result.out, "");
}

TEST_F(UffdSnapshotTest, CorruptMissingOrForeignWorkingSetFilesAreRefused) {
  CounterSnapshot snap = SnapshotCounterAt(2);
  ASSERT_EQ(RestoreWithUffd(snap, {}, "first").result.exit_code, 0);
  std::string good = Slurp(snap.memory + ".ws");
  ASSERT_FALSE(good.empty());

  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x01;
  ExpectWorkingSetRefused(snap, WriteTempFile("flipped.ws", flipped), "CRC mismatch");
  ExpectWorkingSetRefused(snap, WriteTempFile("short.ws", good.substr(0, good.size() - 9)),
                          "truncated");
  ExpectWorkingSetRefused(snap, WriteTempFile("junk.ws", "not a working set"), "wrong magic");
  ExpectWorkingSetRefused(snap, snap.dir + "/absent.ws", "cannot open working-set file");

  // A well-formed set recorded on another snapshot of the same guest.
  CounterSnapshot other = SnapshotCounterAt(4);
  ExpectWorkingSetRefused(other, snap.memory + ".ws", "different snapshot memory file");
}

TEST_F(UffdSnapshotTest, WorkingSetFlagsNeedTheUffdBackend) {
  CounterSnapshot snap = SnapshotCounterAt(2);
  ProcessResult result =
      RunProcess({BinPath("ember-vmm"), "--restore-from", snap.state, "--restore-mem",
                  snap.memory, "--prefetch-working-set"},
                 seconds(30));
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("need --restore-mem-backend uffd"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace ember::testing
