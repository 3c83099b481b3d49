// ember-agent's resident handler (StartHandler, Invoke, its timeout and death) and Shutdown,
// run as the real binary on a Unix socket, driven through the host's C++ client.
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "tests/unit/agent/agent_harness.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

// A handler speaking agent.proto's framing. Answers "<invocation count>:<pid>:<payload>", so
// a count that keeps rising proves one resident process; "sleep" never answers (and makes a
// file "sleeping" beside the script first), "die" exits, "big:N" answers N bytes.
constexpr const char* kHandler = R"(import os, struct, sys, time
count = 0
read, write = sys.stdin.buffer, sys.stdout.buffer
while True:
    header = read.read(4)
    if len(header) < 4:
        break
    payload = read.read(struct.unpack("<I", header)[0])
    count += 1
    if payload == b"sleep":
        open(os.path.join(os.path.dirname(__file__), "sleeping"), "w").close()
        time.sleep(60)
    if payload == b"die":
        os._exit(3)
    if payload.startswith(b"big:"):
        out = b"x" * int(payload[4:])
    else:
        out = b"%d:%d:" % (count, os.getpid()) + payload
    write.write(struct.pack("<I", len(out)) + out)
    write.flush()
)";

std::string WriteHandler(const std::string& dir) {
  std::string path = dir + "/handler.py";
  std::ofstream(path) << kHandler;
  return path;
}

v1::StartHandlerRequest HandlerRequest(const std::string& script) {
  v1::StartHandlerRequest request;
  request.add_argv("/usr/bin/python3");
  request.add_argv(script);
  request.set_uid(::getuid());
  request.set_gid(::getgid());
  return request;
}

// The invocation count and pid a handler's answer carries.
std::pair<int, int> CountAndPid(const std::string& answer) {
  std::size_t first = answer.find(':');
  std::size_t second = answer.find(':', first + 1);
  return {std::stoi(answer.substr(0, first)),
          std::stoi(answer.substr(first + 1, second - first - 1))};
}

TEST(AgentHandler, OneResidentProcessServesManyInvocationsKeepingItsState) {
  AgentUnderTest agent;
  agent_client::AgentClient client = agent.Client();
  ASSERT_TRUE(client.StartHandler(HandlerRequest(WriteHandler(agent.scratch()))).ok());

  int first_pid = 0;
  for (int i = 1; i <= 50; ++i) {
    std::string payload = "call " + std::to_string(i);
    absl::StatusOr<agent_client::InvokeOutcome> outcome = client.Invoke(payload);
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    auto [count, pid] = CountAndPid(outcome->output);
    if (i == 1) first_pid = pid;
    EXPECT_EQ(count, i);
    EXPECT_EQ(pid, first_pid);
    EXPECT_TRUE(outcome->output.ends_with(":" + payload)) << outcome->output;
    EXPECT_GT(outcome->handler_us, 0u);
  }
  absl::StatusOr<v1::ReadyInfo> ready = client.Ready();
  ASSERT_TRUE(ready.ok());
  EXPECT_TRUE(ready->handler_running());
}

TEST(AgentHandler, AResultOver64KiBArrivesWhole) {
  AgentUnderTest agent;
  agent_client::AgentClient client = agent.Client();
  ASSERT_TRUE(client.StartHandler(HandlerRequest(WriteHandler(agent.scratch()))).ok());

  absl::StatusOr<agent_client::InvokeOutcome> outcome = client.Invoke("big:300000");

  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_TRUE(outcome->output == std::string(300000, 'x')) << outcome->output.size();
}

TEST(AgentHandler, InvokeStartsTheImagesEntrypointWhenNoHandlerRuns) {
  ScopedTempDir scripts("ember-agent-handler");
  AgentUnderTest::Setup setup;
  setup.image.add_entrypoint("/usr/bin/python3");
  setup.image.add_cmd(WriteHandler(scripts.path()));
  setup.image.set_user(std::to_string(::getuid()) + ":" + std::to_string(::getgid()));
  AgentUnderTest agent(setup);

  absl::StatusOr<agent_client::InvokeOutcome> outcome = agent.Client().Invoke("hello");

  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_TRUE(outcome->output.starts_with("1:")) << outcome->output;
  EXPECT_TRUE(outcome->output.ends_with(":hello")) << outcome->output;
}

TEST(AgentHandler, InvokeWithNoHandlerAndNoEntrypointIsFailedPrecondition) {
  AgentUnderTest agent;

  absl::StatusOr<agent_client::InvokeOutcome> outcome = agent.Client().Invoke("hello");

  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kFailedPrecondition) << outcome.status();
}

TEST(AgentHandler, ASecondStartIsAlreadyExists) {
  AgentUnderTest agent;
  agent_client::AgentClient client = agent.Client();
  std::string script = WriteHandler(agent.scratch());
  ASSERT_TRUE(client.StartHandler(HandlerRequest(script)).ok());

  EXPECT_EQ(client.StartHandler(HandlerRequest(script)).code(), absl::StatusCode::kAlreadyExists);
}

TEST(AgentHandler, TimeoutKillsTheHandlerAndStartsAFreshOne) {
  AgentUnderTest agent;
  agent_client::AgentClient client = agent.Client();
  ASSERT_TRUE(client.StartHandler(HandlerRequest(WriteHandler(agent.scratch()))).ok());
  absl::StatusOr<agent_client::InvokeOutcome> before = client.Invoke("one");
  ASSERT_TRUE(before.ok()) << before.status();

  absl::StatusOr<agent_client::InvokeOutcome> slow = client.Invoke("sleep", 300);
  absl::StatusOr<agent_client::InvokeOutcome> after = client.Invoke("two");

  EXPECT_EQ(slow.status().code(), absl::StatusCode::kDeadlineExceeded) << slow.status();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(CountAndPid(after->output).first, 1) << "a fresh handler counts from 1";
  EXPECT_NE(CountAndPid(after->output).second, CountAndPid(before->output).second);
  // Only the fresh handler is left: the killed one was reaped.
  std::vector<std::pair<pid_t, char>> children = WaitChildren(agent.agent_pid(), 1);
  ASSERT_EQ(children.size(), 1u);
  EXPECT_EQ(children[0].first, CountAndPid(after->output).second);
}

TEST(AgentHandler, HandlerDeathIsUnavailableAndTheNextInvokeStartsItAgain) {
  AgentUnderTest agent;
  agent_client::AgentClient client = agent.Client();
  ASSERT_TRUE(client.StartHandler(HandlerRequest(WriteHandler(agent.scratch()))).ok());

  absl::StatusOr<agent_client::InvokeOutcome> died = client.Invoke("die");
  EXPECT_EQ(died.status().code(), absl::StatusCode::kUnavailable) << died.status();
  absl::StatusOr<agent_client::InvokeOutcome> again = client.Invoke("again");

  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(CountAndPid(again->output).first, 1);
  std::vector<std::pair<pid_t, char>> children = WaitChildren(agent.agent_pid(), 1);
  ASSERT_EQ(children.size(), 1u) << "the dead handler must not stay a zombie";
  EXPECT_NE(children[0].second, 'Z');
}

TEST(AgentHandler, AHandlerKilledBetweenInvocationsIsReapedAndRestarted) {
  AgentUnderTest agent;
  agent_client::AgentClient client = agent.Client();
  ASSERT_TRUE(client.StartHandler(HandlerRequest(WriteHandler(agent.scratch()))).ok());
  ASSERT_TRUE(client.Invoke("one").ok());

  ASSERT_TRUE(client.Signal("", SIGKILL).ok());
  EXPECT_TRUE(WaitNoChildren(agent.agent_pid()));
  absl::StatusOr<agent_client::InvokeOutcome> after = client.Invoke("two");

  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(CountAndPid(after->output).first, 1);
}

TEST(AgentHandler, SignalWithNoHandlerIsNotFound) {
  AgentUnderTest agent;

  EXPECT_EQ(agent.Client().Signal("", SIGTERM).code(), absl::StatusCode::kNotFound);
}

TEST(AgentHandler, ASecondInvocationWhileOneRunsIsFailedPrecondition) {
  AgentUnderTest agent;
  agent_client::AgentClient client = agent.Client();
  ASSERT_TRUE(client.StartHandler(HandlerRequest(WriteHandler(agent.scratch()))).ok());
  absl::Status slow_status;
  std::thread slow([&] { slow_status = agent.Client().Invoke("sleep", 5'000).status(); });
  const std::string sleeping = agent.scratch() + "/sleeping";
  while (::access(sleeping.c_str(), F_OK) != 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }

  absl::Status busy = client.Invoke("quick").status();
  slow.join();

  EXPECT_EQ(busy.code(), absl::StatusCode::kFailedPrecondition) << busy;
  EXPECT_EQ(slow_status.code(), absl::StatusCode::kDeadlineExceeded) << slow_status;
}

TEST(AgentShutdown, AcknowledgesThenTheAgentExitsWithStatusZero) {
  AgentUnderTest agent;

  absl::Status shutdown = agent.Client().Shutdown();
  ProcessResult ended = agent.Wait(seconds(30));

  EXPECT_TRUE(shutdown.ok()) << shutdown;
  EXPECT_EQ(ended.exit_code, 0) << ended.err;
  EXPECT_FALSE(ended.timed_out);
}

}  // namespace
}  // namespace ember::testing
