// The test guest's `agent` scenario (rootfs/testguest/agent_scenario.c) driven through
// ember-vmm's vsock Unix-socket backend by the host's agent client library, on real KVM: the
// agent protocol end to end through Ember's virtio-vsock device, and across a snapshot
// restore. Guest-side work is emulated here (DESIGN.md), so the tests check what is answered,
// never how fast.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ember/v1/agent.pb.h"
#include "rootfs/testguest/agent_ports.h"
#include "tests/support/files.h"
#include "tests/support/kvm_available.h"
#include "tests/support/process.h"
#include "vmm/agent_client/agent_client.h"
#include "vmm/control/frame.h"

namespace ember::testing {
namespace {

using agent_client::AgentClient;
using agent_client::Endpoint;
using agent_client::ReadyListener;
using std::chrono::seconds;

static_assert(AGENT_GUEST_PORT == v1::AGENT_PORT_DEFAULT);
static_assert(AGENT_READY_HOST_PORT == v1::AGENT_PORT_READY_EVENT);

constexpr int kBootMs = 60'000;
// MAX_CONNS in agent_scenario.c.
constexpr int kGuestConnections = 4;

std::string AgentConfig(const std::string& uds_path) {
  return WriteTempFile("vm.json",
                       R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=agent"},)"
                       R"( "vsock": {"vsock_id": "vsock0", "guest_cid": 3, "uds_path": ")" +
                           uds_path + R"("}})");
}

v1::ExecRequest Argv(std::initializer_list<std::string> argv) {
  v1::ExecRequest request;
  for (const std::string& arg : argv) request.add_argv(arg);
  return request;
}

struct Ran {
  std::string out;
  int exit_code = -1;
};

absl::StatusOr<Ran> RunExec(AgentClient& client, const v1::ExecRequest& request) {
  Ran ran;
  absl::StatusOr<agent_client::ExecResult> result =
      client.Exec(request, [&](v1::Output::Stream stream, std::string_view data) {
        if (stream == v1::Output::STDOUT) ran.out += data;
      });
  if (!result.ok()) return result.status();
  ran.exit_code = result->exit.exit_code();
  return ran;
}

// Sends `bytes` as they are on a new connection and returns the guest's first answer.
absl::StatusOr<v1::AgentResponse> SendRaw(const Endpoint& endpoint, const std::string& bytes) {
  absl::StatusOr<agent_client::Stream> stream = agent_client::Stream::Open(endpoint, {});
  if (!stream.ok()) return stream.status();
  absl::Status written = control::WriteAll(stream->fd(), bytes, 10'000);
  if (!written.ok()) return written;
  return stream->Receive(30'000);
}

std::string Frame(const std::string& payload) {
  std::string frame(4, '\0');
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>(payload.size() >> (8 * i));
  return frame + payload;
}

// One guest serves every test of the suite: each request has its own connection, as in
// production, and the later tests show the earlier ones left the guest serving.
class AgentGuest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::access("/dev/kvm", R_OK | W_OK) != 0) return;  // each test skips, saying why
    dir_ = new ScopedTempDir("ember-agent");
    uds_ = dir_->path() + "/v.sock";
    absl::StatusOr<ReadyListener> listener = ReadyListener::ForVsock(uds_);
    ASSERT_TRUE(listener.ok()) << listener.status();
    vmm_ = new Process({BinPath("ember-vmm"), "--config", AgentConfig(uds_)});
    absl::StatusOr<v1::ReadyInfo> ready = listener->Accept(kBootMs);
    ASSERT_TRUE(ready.ok()) << ready.status();
    event_ = new v1::ReadyInfo(*ready);
  }
  static void TearDownTestSuite() {
    delete vmm_;
    delete event_;
    delete dir_;
  }
  void SetUp() override {
    EMBER_REQUIRE_KVM();
    ASSERT_NE(event_, nullptr) << "the guest sent no ready event";
  }

  static AgentClient Client() { return AgentClient(Endpoint::Vsock(uds_)); }

  static inline ScopedTempDir* dir_ = nullptr;
  static inline std::string uds_;
  static inline Process* vmm_ = nullptr;
  static inline v1::ReadyInfo* event_ = nullptr;
};

TEST_F(AgentGuest, ReadyEventAndReadyAnswerNameTheTestGuestAndOneBootId) {
  absl::StatusOr<v1::ReadyInfo> ready = Client().Ready();
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(ready->protocol_version(), v1::AGENT_PROTOCOL_VERSION_1);
  EXPECT_EQ(ready->agent_version(), "ember-testguest");
  EXPECT_NE(ready->boot_id(), 0u);
  EXPECT_EQ(ready->boot_id(), event_->boot_id());
  EXPECT_EQ(event_->agent_version(), "ember-testguest");
}

TEST_F(AgentGuest, EchoWritesItsArgumentsAndExitsZero) {
  AgentClient client = Client();
  absl::StatusOr<Ran> ran = RunExec(client, Argv({"echo", "hello", "from the guest"}));
  ASSERT_TRUE(ran.ok()) << ran.status();
  EXPECT_EQ(ran->out, "hello from the guest\n");
  EXPECT_EQ(ran->exit_code, 0);
}

TEST_F(AgentGuest, CatCopiesStdinToStdoutAcrossSeveralVsockPackets) {
  // 1000 bytes: more than one 256-byte packet each way.
  std::string input;
  for (int i = 0; i < 1000; ++i) input.push_back(static_cast<char>(i * 7 + 1));
  v1::ExecRequest request = Argv({"cat"});
  request.set_stdin(input);
  AgentClient client = Client();
  absl::StatusOr<Ran> ran = RunExec(client, request);
  ASSERT_TRUE(ran.ok()) << ran.status();
  EXPECT_EQ(ran->out, input);
  EXPECT_EQ(ran->exit_code, 0);
}

TEST_F(AgentGuest, CatCopiesStreamedStdinBeyondTheGuestsWindowUntilEof) {
  v1::ExecRequest request = Argv({"cat"});
  request.set_stdin_stream(true);
  absl::StatusOr<std::unique_ptr<agent_client::ExecCall>> call = Client().StartExec(request);
  ASSERT_TRUE(call.ok()) << call.status();
  // Three frames of 2000 bytes: more than the guest's 4 KiB receive window, which the
  // fwd_cnt in its answers reopens.
  std::string sent;
  for (int i = 0; i < 3; ++i) {
    std::string chunk(2000, static_cast<char>('a' + i));
    ASSERT_TRUE((*call)->SendStdin(chunk, false).ok());
    sent += chunk;
  }
  ASSERT_TRUE((*call)->Resize(24, 80).ok());  // taken, no effect
  ASSERT_TRUE((*call)->SendStdin("end", true).ok());
  sent += "end";
  std::string out;
  absl::StatusOr<v1::ExitStatus> exit =
      (*call)->Wait([&](v1::Output::Stream, std::string_view data) { out += data; });
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_code(), 0);
  EXPECT_EQ(out, sent);
}

// Protobuf's varint, for frames built by hand.
std::string Varint(std::uint64_t v) {
  std::string out;
  do {
    out.push_back(static_cast<char>((v & 0x7f) | (v > 0x7f ? 0x80 : 0)));
    v >>= 7;
  } while (v != 0);
  return out;
}

TEST_F(AgentGuest, StdinFramesWithoutOutputStillReopenTheGuestsWindow) {
  absl::StatusOr<agent_client::Stream> stream =
      agent_client::Stream::Open(Endpoint::Vsock(uds_), {});
  ASSERT_TRUE(stream.ok()) << stream.status();
  v1::AgentRequest exec;
  *exec.mutable_exec() = Argv({"cat"});
  exec.mutable_exec()->set_stdin_stream(true);
  ASSERT_TRUE(stream->Send(exec).ok());
  absl::StatusOr<v1::AgentResponse> started = stream->Receive(30'000);
  ASSERT_TRUE(started.ok() && started->has_exec_started()) << started.status();
  // StdinData with no data, only an unknown 2000-byte field: nothing for cat to write, so only
  // the guest's answers to the device's credit requests tell the host it took the bytes.
  // Three pass its 4 KiB window.
  const std::string padding = "\x7a" + Varint(2000) + std::string(2000, 'p');
  const std::string request = "\x1a" + Varint(padding.size()) + padding;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(control::WriteAll(stream->fd(), Frame(request), 10'000).ok());
  }
  v1::AgentRequest eof;
  eof.mutable_stdin_data()->set_eof(true);
  ASSERT_TRUE(stream->Send(eof).ok());
  absl::StatusOr<v1::AgentResponse> exit = stream->Receive(30'000);
  ASSERT_TRUE(exit.ok()) << exit.status();
  ASSERT_TRUE(exit->has_exit()) << exit->DebugString();
  EXPECT_EQ(exit->exit().exit_code(), 0);
}

TEST_F(AgentGuest, ExitReturnsItsCode) {
  AgentClient client = Client();
  for (int code : {0, 7, 255}) {
    absl::StatusOr<Ran> ran = RunExec(client, Argv({"exit", std::to_string(code)}));
    ASSERT_TRUE(ran.ok()) << ran.status();
    EXPECT_EQ(ran->exit_code, code);
    EXPECT_EQ(ran->out, "");
  }
}

TEST_F(AgentGuest, SleepRunsUntilASignalOnItsConnectionEndsItAsThatSignal) {
  absl::StatusOr<std::unique_ptr<agent_client::ExecCall>> call =
      Client().StartExec(Argv({"sleep", "infinity"}));
  ASSERT_TRUE(call.ok()) << call.status();
  // Neither stdin, a resize nor a signal a process ignores by default ends it.
  ASSERT_TRUE((*call)->SendStdin("ignored", true).ok());
  ASSERT_TRUE((*call)->Resize(24, 80).ok());
  ASSERT_TRUE((*call)->Signal(SIGWINCH).ok());
  ASSERT_TRUE((*call)->Signal(SIGTERM).ok());
  std::string out;
  absl::StatusOr<v1::ExitStatus> exit =
      (*call)->Wait([&](v1::Output::Stream, std::string_view data) { out += data; });
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->signal(), SIGTERM);
  EXPECT_EQ(exit->exit_code(), 128 + SIGTERM);
  EXPECT_EQ(out, "");
}

TEST_F(AgentGuest, SleepTakesOnlyInfinity) {
  AgentClient client = Client();
  absl::StatusOr<Ran> ran = RunExec(client, Argv({"sleep", "5"}));
  EXPECT_EQ(ran.status().code(), absl::StatusCode::kInvalidArgument) << ran.status();
}

TEST_F(AgentGuest, UnknownProgramIsNotFound) {
  AgentClient client = Client();
  absl::StatusOr<Ran> ran = RunExec(client, Argv({"/bin/sh", "-c", "true"}));
  EXPECT_EQ(ran.status().code(), absl::StatusCode::kNotFound) << ran.status();
}

TEST_F(AgentGuest, InvokeReversesThePayload) {
  absl::StatusOr<agent_client::InvokeOutcome> result = Client().Invoke("payload\x01\xff");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->output,
            "\xff\x01"
            "daolyap");
}

TEST_F(AgentGuest, RequestTheGuestDoesNotServeIsUnimplemented) {
  absl::Status status = Client().StartHandler({});
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
}

TEST_F(AgentGuest, MalformedRequestIsInvalidArgumentAndTheGuestServesOn) {
  // A varint that never ends inside the frame.
  absl::StatusOr<v1::AgentResponse> answer = SendRaw(Endpoint::Vsock(uds_), Frame("\x12\xff\xff"));
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_TRUE(answer->has_error()) << answer->DebugString();
  EXPECT_EQ(answer->error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(Client().Ready().ok());
}

TEST_F(AgentGuest, FrameLargerThanTheGuestTakesIsResourceExhausted) {
  const std::string header("\x00\x00\x01\x00", 4);  // 64 KiB follow, never sent
  absl::StatusOr<v1::AgentResponse> answer = SendRaw(Endpoint::Vsock(uds_), header);
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_TRUE(answer->has_error()) << answer->DebugString();
  EXPECT_EQ(answer->error().code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_TRUE(Client().Ready().ok());
}

TEST_F(AgentGuest, KnownFieldOfTheWrongWireTypeIsInvalidArgument) {
  // AgentRequest.exec (field 2) as a varint.
  absl::StatusOr<v1::AgentResponse> answer = SendRaw(Endpoint::Vsock(uds_), Frame("\x10\x01"));
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_TRUE(answer->has_error()) << answer->DebugString();
  EXPECT_EQ(answer->error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
}

TEST_F(AgentGuest, UnknownFieldsAreSkipped) {
  v1::AgentRequest request;
  request.mutable_invoke()->set_payload("ab");
  std::string bytes = request.SerializeAsString();
  // Field 99 as a varint, a fixed64, a fixed32 and bytes, before the request proper.
  const std::string unknown(
      "\x98\x06\x05\x99\x06"
      "12345678"
      "\x9d\x06"
      "1234"
      "\x9a\x06\x02xy",
      24);
  absl::StatusOr<v1::AgentResponse> answer = SendRaw(Endpoint::Vsock(uds_), Frame(unknown + bytes));
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_TRUE(answer->has_invoke_result()) << answer->DebugString();
  EXPECT_EQ(answer->invoke_result().output(), "ba");
}

TEST_F(AgentGuest, ArbitraryFramesGetAnAnswerAndTheGuestServesOn) {
  std::mt19937 random(14);
  for (int i = 0; i < 40; ++i) {
    std::string payload(random() % 64, '\0');
    for (char& c : payload) c = static_cast<char>(random());
    absl::StatusOr<v1::AgentResponse> answer = SendRaw(Endpoint::Vsock(uds_), Frame(payload));
    ASSERT_TRUE(answer.ok()) << "frame " << i << ": " << answer.status();
  }
  absl::StatusOr<v1::ReadyInfo> ready = Client().Ready();
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(ready->boot_id(), event_->boot_id());
}

TEST_F(AgentGuest, HostsLeavingMidRequestFreeTheirConnections) {
  // More than the guest serves at once, one after another, each gone inside its frame.
  for (int i = 0; i < 2 * kGuestConnections; ++i) {
    absl::StatusOr<agent_client::Stream> stream =
        agent_client::Stream::Open(Endpoint::Vsock(uds_), {});
    ASSERT_TRUE(stream.ok()) << "connection " << i << ": " << stream.status();
    ASSERT_TRUE(control::WriteAll(stream->fd(), "\x10\x00", 1'000).ok());
  }
  // The guest may still be taking the last ones down; the client waits for none of that.
  absl::Status served = absl::UnavailableError("not tried");
  for (int i = 0; i < 100 && !served.ok(); ++i) {
    served = Client().Ready().status();
    if (!served.ok()) usleep(20'000);
  }
  EXPECT_TRUE(served.ok()) << served;
}

TEST_F(AgentGuest, BareConnectionEchoesBytesBesideTheAgent) {
  absl::StatusOr<agent_client::Stream> stream =
      agent_client::Stream::Open(Endpoint::Vsock(uds_, AGENT_BYTE_ECHO_PORT), {});
  ASSERT_TRUE(stream.ok()) << stream.status();
  ASSERT_EQ(::write(stream->fd(), "x", 1), 1);
  char c = 0;
  for (int i = 0; i < 600 && ::read(stream->fd(), &c, 1) != 1; ++i) usleep(50'000);
  EXPECT_EQ(c, 'x');
}

std::uint64_t Fnv1a64(const std::string& bytes) {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) hash = (hash ^ c) * 0x100000001b3ull;
  return hash;
}

// A clone restored from a snapshot keeps its parent's boot_id until the host's PostRestore,
// which must reach it: the guest drops its connections at the device's TRANSPORT_RESET and
// listens on.
TEST(AgentGuestRestore, PostRestoreReachesTheCloneWhichThenHasItsOwnBootId) {
  EMBER_REQUIRE_KVM();
  ScopedTempDir dir("ember-agent");
  const std::string uds = dir.path() + "/v.sock";
  const std::string log = dir.path() + "/vmm.log";
  absl::StatusOr<ReadyListener> parent_ready = ReadyListener::ForVsock(uds);
  ASSERT_TRUE(parent_ready.ok()) << parent_ready.status();
  Process parent({BinPath("ember-vmm"), "--config", AgentConfig(uds), "--snapshot-path",
                  dir.path() + "/vm.state", "--snapshot-mem-path", dir.path() + "/vm.mem",
                  "--log-path", log});
  ASSERT_TRUE(parent_ready->Accept(kBootMs).ok());
  absl::StatusOr<v1::ReadyInfo> before = AgentClient(Endpoint::Vsock(uds)).Ready();
  ASSERT_TRUE(before.ok()) << before.status();
  // Connections left open mid-request, as many as the guest serves at once: the clone must
  // drop them, or it would have no room for the host's PostRestore.
  std::vector<agent_client::Stream> open_requests;
  for (int i = 0; i < kGuestConnections; ++i) {
    absl::StatusOr<agent_client::Stream> stream =
        agent_client::Stream::Open(Endpoint::Vsock(uds), {});
    ASSERT_TRUE(stream.ok()) << stream.status();
    ASSERT_TRUE(control::WriteAll(stream->fd(), "\x10\x00", 1'000).ok());
    open_requests.push_back(std::move(*stream));
  }

  parent.Signal(SIGUSR1);  // pause, snapshot, resume
  for (int i = 0; i < 200 && ReadFile(log).find("snapshot written") == std::string::npos; ++i) {
    usleep(50'000);
  }
  ASSERT_NE(ReadFile(log).find("snapshot written"), std::string::npos) << ReadFile(log);
  parent.Signal(SIGKILL);
  parent.Wait(seconds(10));

  const std::string clone_uds = dir.path() + "/clone.sock";
  absl::StatusOr<ReadyListener> clone_ready = ReadyListener::ForVsock(clone_uds);
  ASSERT_TRUE(clone_ready.ok()) << clone_ready.status();
  Process clone({BinPath("ember-vmm"), "--restore-from", dir.path() + "/vm.state", "--restore-mem",
                 dir.path() + "/vm.mem", "--vsock-override", clone_uds});
  // The guest announces itself again once it has dropped the parent's connections.
  absl::StatusOr<v1::ReadyInfo> announced = clone_ready->Accept(kBootMs);
  ASSERT_TRUE(announced.ok()) << announced.status();
  EXPECT_EQ(announced->boot_id(), before->boot_id()) << "the clone should still be its parent";

  AgentClient client(Endpoint::Vsock(clone_uds));
  v1::PostRestoreRequest request;
  request.set_wall_clock_ns(1'765'000'000'123'456'789ull);
  request.set_entropy("fresh seed for this clone");
  absl::StatusOr<v1::PostRestoreResult> result = client.PostRestore(request);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->wall_clock_ns(), request.wall_clock_ns());
  EXPECT_EQ(result->entropy_bytes(), request.entropy().size());
  EXPECT_EQ(result->entropy_fnv1a(), Fnv1a64(request.entropy()));
  EXPECT_NE(result->boot_id(), before->boot_id());
  EXPECT_NE(result->boot_id(), 0u);

  absl::StatusOr<v1::ReadyInfo> after = client.Ready();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->boot_id(), result->boot_id());
  absl::StatusOr<Ran> ran = RunExec(client, Argv({"echo", "clone"}));
  ASSERT_TRUE(ran.ok()) << ran.status();
  EXPECT_EQ(ran->out, "clone\n");
  ProcessResult out = clone.Wait(std::chrono::milliseconds(0));
  EXPECT_EQ(out.out.find("Ember test guest"), std::string::npos) << "the guest rebooted";
  EXPECT_NE(out.out.find("agent: transport reset\n"), std::string::npos) << out.out;
}

}  // namespace
}  // namespace ember::testing
