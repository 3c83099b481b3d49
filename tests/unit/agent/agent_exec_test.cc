// ember-agent's Ready and Exec, run as the real binary on a Unix socket and driven through
// the host's C++ client (vmm/agent_client).
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "tests/unit/agent/agent_harness.h"

namespace ember::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(AgentReady, AnswersVersionImageConfigAndSendsTheSameInTheReadyEvent) {
  AgentUnderTest::Setup setup;
  setup.image.add_entrypoint("/bin/handler");
  setup.image.add_env("LANG=C.UTF-8");
  setup.image.set_working_dir("/srv");
  AgentUnderTest agent(setup);
  ASSERT_TRUE(agent.ready_event().ok()) << agent.ready_event().status();

  absl::StatusOr<v1::ReadyInfo> ready = agent.Client().Ready();

  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(ready->protocol_version(), v1::AGENT_PROTOCOL_VERSION_1);
  EXPECT_EQ(ready->agent_version().rfind("ember-agent ", 0), 0u) << ready->agent_version();
  EXPECT_EQ(ready->image().entrypoint(0), "/bin/handler");
  EXPECT_EQ(ready->image().env(0), "LANG=C.UTF-8");
  EXPECT_EQ(ready->image().working_dir(), "/srv");
  EXPECT_NE(ready->boot_id(), 0u);
  EXPECT_GT(ready->uptime_ns(), 0u);
  EXPECT_FALSE(ready->handler_running());
  EXPECT_EQ(agent.ready_event()->boot_id(), ready->boot_id());
}

TEST(AgentReady, CorruptImageConfigIsAnErrorAndTheAgentKeepsServing) {
  AgentUnderTest agent;
  std::ofstream(agent.scratch() + "/image-config.pb", std::ios::binary) << "\xff\xff\xff";

  absl::StatusOr<v1::ReadyInfo> ready = agent.Client().Ready();

  EXPECT_EQ(ready.status().code(), absl::StatusCode::kFailedPrecondition) << ready.status();
  EXPECT_NE(ready.status().message().find("image-config.pb"), std::string_view::npos);
  absl::StatusOr<agent_client::ExecResult> exec =
      agent.Client().Exec(ExecOf({"true"}), {});
  EXPECT_EQ(exec.status().code(), absl::StatusCode::kFailedPrecondition);
  v1::ExecRequest explicit_env = ExecOf({"true"});
  explicit_env.add_env("PATH=/usr/bin:/bin");
  explicit_env.set_cwd("/");
  EXPECT_TRUE(agent.Client().Exec(explicit_env, {}).ok());
}

TEST(AgentExec, StreamsStdoutAndStderrApartAndReportsTheExitCode) {
  AgentUnderTest agent;
  Collected output;

  absl::StatusOr<agent_client::ExecResult> result = agent.Client().Exec(
      ExecOf({"sh", "-c", "echo to-out; echo to-err >&2; exit 7"}), output.Callback());

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(output.out, "to-out\n");
  EXPECT_EQ(output.err, "to-err\n");
  EXPECT_EQ(result->exit.exit_code(), 7);
  EXPECT_EQ(result->exit.signal(), 0);
  EXPECT_FALSE(result->exit.timed_out());
  EXPECT_GT(result->started.pid(), 0);
  EXPECT_FALSE(result->started.exec_id().empty());
  EXPECT_TRUE(WaitNoChildren(agent.agent_pid()));
}

TEST(AgentExec, OutputOver64KiBArrivesWholeInOrderInChunksOfAtMost64KiB) {
  AgentUnderTest agent;
  Collected output;
  std::string expected;
  for (int i = 1; i <= 100000; ++i) expected += std::to_string(i) + "\n";

  absl::StatusOr<agent_client::ExecResult> result =
      agent.Client().Exec(ExecOf({"seq", "1", "100000"}), output.Callback());

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit.exit_code(), 0);
  EXPECT_EQ(output.out.size(), expected.size());
  EXPECT_TRUE(output.out == expected);
  EXPECT_GT(output.chunk_sizes.size(), 1u);
  for (std::size_t size : output.chunk_sizes) EXPECT_LE(size, 64u * 1024);
}

TEST(AgentExec, EachStreamKeepsItsOrderAcrossManyWrites) {
  AgentUnderTest agent;
  Collected output;

  absl::StatusOr<agent_client::ExecResult> result = agent.Client().Exec(
      ExecOf({"sh", "-c", "for i in $(seq 1 200); do echo o$i; echo e$i >&2; done"}),
      output.Callback());

  ASSERT_TRUE(result.ok()) << result.status();
  std::string out;
  std::string err;
  for (int i = 1; i <= 200; ++i) {
    out += "o" + std::to_string(i) + "\n";
    err += "e" + std::to_string(i) + "\n";
  }
  EXPECT_EQ(output.out, out);
  EXPECT_EQ(output.err, err);
}

TEST(AgentExec, DeathBySignalIs128PlusTheSignal) {
  AgentUnderTest agent;

  absl::StatusOr<agent_client::ExecResult> result =
      agent.Client().Exec(ExecOf({"sh", "-c", "kill -TERM $$"}));

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit.signal(), SIGTERM);
  EXPECT_EQ(result->exit.exit_code(), 128 + SIGTERM);
}

TEST(AgentExec, StdinBytesAreWrittenThenStdinIsClosed) {
  AgentUnderTest agent;
  Collected output;
  v1::ExecRequest request = ExecOf({"sh", "-c", "cat; echo end"});
  request.set_stdin(std::string("line one\nline two\n") + std::string(200'000, 'z'));

  absl::StatusOr<agent_client::ExecResult> result = agent.Client().Exec(request, output.Callback());

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(output.out == request.stdin() + "end\n") << output.out.size();
}

TEST(AgentExec, StreamedStdinReachesTheProcessUntilEof) {
  AgentUnderTest agent;
  v1::ExecRequest request = ExecOf({"sh", "-c", "cat; echo end"});
  request.set_stdin_stream(true);
  absl::StatusOr<std::unique_ptr<agent_client::ExecCall>> call = agent.Client().StartExec(request);
  ASSERT_TRUE(call.ok()) << call.status();

  ASSERT_TRUE((*call)->SendStdin("first ", false).ok());
  ASSERT_TRUE((*call)->SendStdin(std::string(100'000, 'm'), false).ok());
  ASSERT_TRUE((*call)->SendStdin(" last", true).ok());
  Collected output;
  absl::StatusOr<v1::ExitStatus> exit = (*call)->Wait(output.Callback());

  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_code(), 0);
  EXPECT_TRUE(output.out == "first " + std::string(100'000, 'm') + " lastend\n");
}

TEST(AgentExec, TimeoutKillsTheProcessGroupAndSaysSo) {
  AgentUnderTest agent;
  v1::ExecRequest request = ExecOf({"sh", "-c", "sleep 60 & sleep 60"});
  request.set_timeout_ms(300);

  absl::StatusOr<agent_client::ExecResult> result = agent.Client().Exec(request);

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->exit.timed_out());
  EXPECT_EQ(result->exit.signal(), SIGKILL);
  EXPECT_GE(result->exit.run_us(), 300'000u);
  EXPECT_TRUE(WaitNoChildren(agent.agent_pid()));
}

TEST(AgentExec, TtyExecSeesATerminalOfTheAskedSize) {
  AgentUnderTest agent;
  Collected output;
  v1::ExecRequest request =
      ExecOf({"sh", "-c", "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo tty; stty size; echo e >&2"});
  request.set_tty(true);
  request.set_rows(33);
  request.set_cols(99);

  absl::StatusOr<agent_client::ExecResult> result = agent.Client().Exec(request, output.Callback());

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(output.out, "tty\r\n33 99\r\ne\r\n");
  EXPECT_EQ(output.err, "");
  EXPECT_EQ(result->exit.exit_code(), 0);
}

TEST(AgentExec, TtyStdinBytesAreTypedThenEndOfFile) {
  AgentUnderTest agent;
  Collected output;
  v1::ExecRequest request = ExecOf({"sh", "-c", "stty -echo; cat; echo done"});
  request.set_tty(true);
  request.set_stdin("no newline at the end");
  request.set_timeout_ms(20'000);

  absl::StatusOr<agent_client::ExecResult> result = agent.Client().Exec(request, output.Callback());

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_FALSE(result->exit.timed_out()) << "cat never saw the end of its input";
  EXPECT_NE(output.out.find("no newline at the end"), std::string::npos) << output.out;
  EXPECT_TRUE(output.out.ends_with("done\r\n")) << output.out;
}

TEST(AgentExec, TtyResizeFromAnotherConnectionReachesTheTerminal) {
  AgentUnderTest agent;
  v1::ExecRequest request = ExecOf({"sh", "-c", "read line; stty size"});
  request.set_tty(true);
  request.set_rows(10);
  request.set_cols(20);
  request.set_stdin_stream(true);
  request.set_exec_id("term");
  absl::StatusOr<std::unique_ptr<agent_client::ExecCall>> call = agent.Client().StartExec(request);
  ASSERT_TRUE(call.ok()) << call.status();

  ASSERT_TRUE(agent.Client().Resize("term", 40, 120).ok());
  ASSERT_TRUE((*call)->SendStdin("go\n", false).ok());
  Collected output;
  absl::StatusOr<v1::ExitStatus> exit = (*call)->Wait(output.Callback());

  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_NE(output.out.find("40 120"), std::string::npos) << output.out;
}

TEST(AgentExec, SignalFromAnotherConnectionReachesTheNamedProcess) {
  AgentUnderTest agent;
  v1::ExecRequest request = ExecOf({"sleep", "60"});
  request.set_exec_id("sleeper");
  absl::StatusOr<std::unique_ptr<agent_client::ExecCall>> call = agent.Client().StartExec(request);
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_EQ((*call)->started().exec_id(), "sleeper");

  ASSERT_TRUE(agent.Client().Signal("sleeper", SIGUSR1).ok());
  absl::StatusOr<v1::ExitStatus> exit = (*call)->Wait({});

  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->signal(), SIGUSR1);
  EXPECT_EQ(agent.Client().Signal("sleeper", SIGUSR1).code(), absl::StatusCode::kNotFound);
}

TEST(AgentExec, SignalOnTheExecsOwnConnection) {
  AgentUnderTest agent;
  absl::StatusOr<std::unique_ptr<agent_client::ExecCall>> call =
      agent.Client().StartExec(ExecOf({"sleep", "60"}));
  ASSERT_TRUE(call.ok()) << call.status();

  ASSERT_TRUE((*call)->Signal(SIGINT).ok());
  absl::StatusOr<v1::ExitStatus> exit = (*call)->Wait({});

  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->signal(), SIGINT);
}

TEST(AgentExec, ASecondProcessCannotTakeARunningExecId) {
  AgentUnderTest agent;
  v1::ExecRequest request = ExecOf({"sleep", "60"});
  request.set_exec_id("one");
  absl::StatusOr<std::unique_ptr<agent_client::ExecCall>> first = agent.Client().StartExec(request);
  ASSERT_TRUE(first.ok()) << first.status();

  absl::StatusOr<agent_client::ExecResult> second = agent.Client().Exec(request);

  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists) << second.status();
}

TEST(AgentExec, ASlowExecDoesNotHoldUpReady) {
  AgentUnderTest agent;
  absl::StatusOr<std::unique_ptr<agent_client::ExecCall>> slow =
      agent.Client().StartExec(ExecOf({"sleep", "60"}));
  ASSERT_TRUE(slow.ok()) << slow.status();

  absl::StatusOr<v1::ReadyInfo> ready = agent.Client().Ready();

  EXPECT_TRUE(ready.ok()) << ready.status();
}

TEST(AgentExec, CwdEnvAndTheImagesDefaults) {
  AgentUnderTest::Setup setup;
  setup.image.add_env("PATH=/usr/bin:/bin");
  setup.image.add_env("FROM_IMAGE=yes");
  setup.image.set_working_dir("/tmp");
  AgentUnderTest agent(setup);
  Collected given;
  Collected defaults;
  v1::ExecRequest request = ExecOf({"sh", "-c", "pwd; echo $GIVEN$FROM_IMAGE"});
  request.set_cwd("/usr");
  request.add_env("PATH=/usr/bin:/bin");
  request.add_env("GIVEN=given");

  ASSERT_TRUE(agent.Client().Exec(request, given.Callback()).ok());
  ASSERT_TRUE(
      agent.Client().Exec(ExecOf({"sh", "-c", "pwd; echo $GIVEN$FROM_IMAGE"}), defaults.Callback())
          .ok());

  EXPECT_EQ(given.out, "/usr\ngiven\n");
  EXPECT_EQ(defaults.out, "/tmp\nyes\n");
}

TEST(AgentExec, AProgramThatCannotStartIsAnErrorNamingIt) {
  AgentUnderTest agent;

  absl::StatusOr<agent_client::ExecResult> missing =
      agent.Client().Exec(ExecOf({"no-such-program-anywhere"}));
  v1::ExecRequest bad_cwd = ExecOf({"true"});
  bad_cwd.set_cwd("/no/such/dir");
  absl::StatusOr<agent_client::ExecResult> cwd = agent.Client().Exec(bad_cwd);
  absl::StatusOr<agent_client::ExecResult> empty = agent.Client().Exec(ExecOf({}));

  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_NE(missing.status().message().find("no-such-program-anywhere"), std::string_view::npos);
  EXPECT_EQ(cwd.status().code(), absl::StatusCode::kNotFound) << cwd.status();
  EXPECT_NE(cwd.status().message().find("chdir /no/such/dir"), std::string_view::npos)
      << cwd.status();
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(WaitNoChildren(agent.agent_pid()));
}

// The value of `key` ("CapEff") in /proc/self/status as `text` has it.
std::string StatusField(const std::string& text, const std::string& key) {
  std::size_t at = text.find("\n" + key + ":\t");
  if (at == std::string::npos) return "(no " + key + ")";
  at += key.size() + 3;
  std::string value = text.substr(at, text.find('\n', at) - at);
  while (!value.empty() && value.back() == ' ') value.pop_back();
  return value;
}

TEST(AgentExec, RlimitsAreSetBeforeTheProgramRuns) {
  AgentUnderTest agent;
  Collected output;
  v1::ExecRequest request = ExecOf({"sh", "-c", "ulimit -Sn; ulimit -Hn; ulimit -c"});
  request.add_rlimits(std::to_string(RLIMIT_NOFILE) + " 100 200");
  request.add_rlimits(std::to_string(RLIMIT_CORE) + " 0 0");

  absl::StatusOr<agent_client::ExecResult> result = agent.Client().Exec(request, output.Callback());

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(output.out, "100\n200\n0\n");
}

TEST(AgentExec, SupplementaryGroupsCapabilitiesAndNoNewPrivsAsAsked) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: the agent changes the process's identity";
  AgentUnderTest agent;
  Collected output;
  v1::ExecRequest request = ExecOf({"cat", "/proc/self/status"});
  request.set_uid(1000);
  request.set_gid(1000);
  request.add_additional_gids(10);
  request.add_additional_gids(20);
  request.set_no_new_privileges(true);
  request.set_set_capabilities(true);
  request.add_cap_bounding("CAP_CHOWN");
  request.add_cap_bounding("CAP_NET_BIND_SERVICE");
  for (auto* set : {request.mutable_cap_effective(), request.mutable_cap_permitted(),
                    request.mutable_cap_inheritable(), request.mutable_cap_ambient()}) {
    set->Add("CAP_NET_BIND_SERVICE");
  }

  absl::StatusOr<agent_client::ExecResult> result = agent.Client().Exec(request, output.Callback());

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(StatusField(output.out, "Uid"), "1000\t1000\t1000\t1000");
  EXPECT_EQ(StatusField(output.out, "Gid"), "1000\t1000\t1000\t1000");
  EXPECT_EQ(StatusField(output.out, "Groups"), "10 20");
  // CAP_CHOWN is bit 0, CAP_NET_BIND_SERVICE bit 10; a non-root process keeps its ambient ones.
  EXPECT_EQ(StatusField(output.out, "CapBnd"), "0000000000000401");
  EXPECT_EQ(StatusField(output.out, "CapAmb"), "0000000000000400");
  EXPECT_EQ(StatusField(output.out, "CapEff"), "0000000000000400");
  EXPECT_EQ(StatusField(output.out, "CapPrm"), "0000000000000400");
  EXPECT_EQ(StatusField(output.out, "NoNewPrivs"), "1");
}

TEST(AgentExec, WithoutLimitsARootProcessHasNoGroupsAndEveryCapability) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: the agent changes the process's identity";
  AgentUnderTest agent;
  Collected output;

  ASSERT_TRUE(agent.Client().Exec(ExecOf({"cat", "/proc/self/status"}), output.Callback()).ok());

  EXPECT_EQ(StatusField(output.out, "Groups"), "");
  EXPECT_EQ(StatusField(output.out, "NoNewPrivs"), "0");
  EXPECT_EQ(StatusField(output.out, "CapEff"), StatusField(output.out, "CapBnd"));
}

TEST(AgentExec, AnUnknownCapabilityOrAMalformedRlimitIsRefusedStartingNothing) {
  AgentUnderTest agent;
  v1::ExecRequest bad_cap = ExecOf({"true"});
  bad_cap.set_set_capabilities(true);
  bad_cap.add_cap_effective("CAP_BANANAS");
  v1::ExecRequest bad_limit = ExecOf({"true"});
  bad_limit.add_rlimits(std::to_string(RLIMIT_NOFILE) + " 200 100");

  absl::StatusOr<agent_client::ExecResult> cap = agent.Client().Exec(bad_cap);
  absl::StatusOr<agent_client::ExecResult> limit = agent.Client().Exec(bad_limit);

  EXPECT_EQ(cap.status().code(), absl::StatusCode::kInvalidArgument) << cap.status();
  EXPECT_NE(cap.status().message().find("CAP_BANANAS"), std::string_view::npos);
  EXPECT_EQ(limit.status().code(), absl::StatusCode::kInvalidArgument) << limit.status();
  EXPECT_NE(limit.status().message().find("200 100"), std::string_view::npos);
  EXPECT_TRUE(WaitNoChildren(agent.agent_pid()));
}

TEST(AgentExec, FilesAreWrittenBeforeTheProcessStarts) {
  AgentUnderTest agent;
  Collected output;
  const std::string hosts = agent.scratch() + "/etc/hosts";
  const std::string link = agent.scratch() + "/resolv.conf";
  std::filesystem::create_directories(agent.scratch() + "/elsewhere");
  std::filesystem::create_symlink(agent.scratch() + "/elsewhere/target", link);
  v1::ExecRequest request =
      ExecOf({"sh", "-c", "cat " + hosts + " " + link + "; stat -c %a " + hosts});
  request.add_file_paths(hosts);
  request.add_file_contents("127.0.0.1 box\n");
  request.add_file_modes(0640);
  request.add_file_paths(link);
  request.add_file_contents("nameserver 10.0.0.1\n");
  request.add_file_modes(0644);

  absl::StatusOr<agent_client::ExecResult> result = agent.Client().Exec(request, output.Callback());

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(output.out, "127.0.0.1 box\nnameserver 10.0.0.1\n640\n");
  // The symlink was replaced, not written through.
  EXPECT_FALSE(std::filesystem::exists(agent.scratch() + "/elsewhere/target"));
}

TEST(AgentExec, ARelativeFilePathOrMismatchedFileListsAreRefused) {
  AgentUnderTest agent;
  v1::ExecRequest relative = ExecOf({"true"});
  relative.add_file_paths("etc/hosts");
  relative.add_file_contents("x");
  relative.add_file_modes(0644);
  v1::ExecRequest dotdot = relative;
  dotdot.set_file_paths(0, "/etc/../hosts");
  v1::ExecRequest mismatched = relative;
  mismatched.set_file_paths(0, "/tmp/x");
  mismatched.clear_file_modes();

  for (const v1::ExecRequest& bad : {relative, dotdot, mismatched}) {
    absl::StatusOr<agent_client::ExecResult> result = agent.Client().Exec(bad);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  }
  EXPECT_TRUE(WaitNoChildren(agent.agent_pid()));
}

TEST(AgentExec, AHostThatLeavesMidStreamTakesTheProcessWithIt) {
  AgentUnderTest agent;
  v1::ExecRequest request = ExecOf({"sh", "-c", "yes | head -c 100000000; sleep 60"});
  request.set_exec_id("chatty");
  {
    absl::StatusOr<std::unique_ptr<agent_client::ExecCall>> call =
        agent.Client().StartExec(request);
    ASSERT_TRUE(call.ok()) << call.status();
  }  // the connection closes here, mid-output

  EXPECT_TRUE(WaitNoChildren(agent.agent_pid()));
  EXPECT_EQ(agent.Client().Signal("chatty", 0).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(agent.Client().Ready().ok());
}

TEST(AgentExec, DetachedProcessRunsOnAndIsReapedWhenItEnds) {
  AgentUnderTest agent;
  v1::ExecRequest request = ExecOf({"sleep", "60"});
  request.set_detach(true);
  request.set_exec_id("background");

  absl::StatusOr<agent_client::ExecResult> result = agent.Client().Exec(request);

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->started.exec_id(), "background");
  ASSERT_EQ(ChildrenOf(agent.agent_pid()).size(), 1u);
  ASSERT_TRUE(agent.Client().Signal("background", SIGTERM).ok());
  EXPECT_TRUE(WaitNoChildren(agent.agent_pid()));
  EXPECT_EQ(agent.Client().Signal("background", 0).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ember::testing
