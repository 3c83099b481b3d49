// The agent protocol's round trip through ember-vmm's vsock (issue 14): the host's agent
// client (vmm/agent_client) asks the test guest's `agent` scenario to Exec `echo`, and reads
// exec_started, the output and the exit back (agent_exec_roundtrip_ms), beside a bare vsock
// round trip to the same guest in the same run: CONNECT through the Unix-socket backend, one
// byte to the guest's byte-echo port and the byte back (vsock_connect_roundtrip_ms). Each
// sample opens its own connection, as the agent protocol does per request. Samples alternate;
// each figure is the median.
//
// The guest's side runs guest instructions, which the development machines' PVM host emulates
// at about 1 us each (DESIGN.md): the figures there are not hardware figures, and the
// difference between them is mostly the test guest's protobuf work and its extra packets,
// emulated. Prints figures only; never asserts.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "perf/bench_options.h"
#include "perf/bench_report.h"
#include "rootfs/testguest/agent_ports.h"
#include "vmm/agent_client/agent_client.h"

extern char** environ;

namespace ember::perf {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kHarness[] = "ember-agent-bench";
constexpr char kUsage[] =
    "usage: ember-agent-bench --vmm PATH --work-dir DIR [--runs N] [--verbose]\n"
    "\n"
    "  --vmm PATH      ember-vmm (with its built-in test guest)\n"
    "  --work-dir DIR  where the VM's config, log and vsock socket go\n"
    "  --runs N        samples per figure (default 40); each figure is the median\n"
    "  --verbose       print every sample to stderr\n";
constexpr int kBootMs = 60'000;

struct Options {
  std::string vmm;
  std::string work_dir;
  int runs = 40;
  bool verbose = false;
};

Options ParseOptions(int argc, char** argv) {
  Options options;
  BenchOptions(kHarness, kUsage)
      .Text("--vmm", &options.vmm, true)
      .Text("--work-dir", &options.work_dir, true)
      .Number("--runs", &options.runs, 1)
      .Flag("--verbose", &options.verbose)
      .Parse(argc, argv);
  return options;
}

template <typename T>
T Check(absl::StatusOr<T> value, const std::string& what) {
  if (!value.ok()) Die(kHarness, what + ": " + value.status().ToString());
  return std::move(value).value();
}

// ember-vmm running the `agent` scenario, its output in a log file; killed when this goes.
class Vmm {
 public:
  Vmm(const std::string& vmm, const std::string& config, const std::string& log) {
    std::vector<std::string> args = {vmm, "--config", config};
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    int error = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) Die(kHarness, "posix_spawn " + vmm + ": " + std::strerror(error));
  }
  Vmm(const Vmm&) = delete;
  Vmm& operator=(const Vmm&) = delete;
  ~Vmm() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }

 private:
  pid_t pid_ = -1;
};

double MsSince(Clock::time_point start) { return SecondsSince(start) * 1000; }

double ExecEchoMs(agent_client::AgentClient& client) {
  v1::ExecRequest request;
  request.add_argv("echo");
  request.add_argv("hello");
  std::string out;
  const Clock::time_point start = Clock::now();
  agent_client::ExecResult result =
      Check(client.Exec(request, [&](v1::Output::Stream, std::string_view data) { out += data; }),
            "Exec echo");
  const double ms = MsSince(start);
  if (out != "hello\n" || result.exit.exit_code() != 0) {
    Die(kHarness, "echo answered \"" + out + "\", exit " + std::to_string(result.exit.exit_code()));
  }
  return ms;
}

double ByteEchoMs(const std::string& uds) {
  const Clock::time_point start = Clock::now();
  agent_client::Stream stream = Check(
      agent_client::Stream::Open(agent_client::Endpoint::Vsock(uds, AGENT_BYTE_ECHO_PORT), {}),
      "CONNECT to the byte-echo port");
  if (::write(stream.fd(), "x", 1) != 1) Die(kHarness, "write to the byte-echo connection");
  char c = 0;
  while (true) {
    ssize_t n = ::read(stream.fd(), &c, 1);
    if (n == 1) break;
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) Die(kHarness, "the byte echo ended");
    pollfd pfd{stream.fd(), POLLIN, 0};
    if (::poll(&pfd, 1, 30'000) == 0) Die(kHarness, "no byte echoed within 30 s");
  }
  const double ms = MsSince(start);
  if (c != 'x') Die(kHarness, "the guest echoed another byte");
  return ms;
}

}  // namespace
}  // namespace ember::perf

int main(int argc, char** argv) {
  using namespace ember::perf;
  const Options options = ParseOptions(argc, argv);
  const std::string uds = options.work_dir + "/agent-bench.sock";
  const std::string config = options.work_dir + "/agent-bench.json";
  std::ofstream(config) << R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=agent"},)"
                        << R"( "vsock": {"vsock_id": "vsock0", "guest_cid": 3, "uds_path": ")"
                        << uds << R"("}})";
  ember::agent_client::ReadyListener ready =
      Check(ember::agent_client::ReadyListener::ForVsock(uds), "ready listener");
  Vmm vmm(options.vmm, config, options.work_dir + "/agent-bench.log");
  (void)Check(ready.Accept(kBootMs), "the guest's ready event");

  ember::agent_client::AgentClient client(ember::agent_client::Endpoint::Vsock(uds));
  (void)ExecEchoMs(client);  // warm-up: first touches of the guest's and the VMM's pages
  (void)ByteEchoMs(uds);
  std::vector<double> agent, bare;
  for (int i = 0; i < options.runs; ++i) {
    agent.push_back(ExecEchoMs(client));
    bare.push_back(ByteEchoMs(uds));
    if (options.verbose) {
      std::fprintf(stderr, "sample %d: agent exec %.3f ms, bare vsock %.3f ms\n", i, agent.back(),
                   bare.back());
    }
  }
  PrintFigure("agent_exec_roundtrip_ms", Median(agent), "ms", "vsock_connect_roundtrip_ms",
              Median(bare));
  PrintNote(
      "agent_exec_roundtrip_ms and vsock_connect_roundtrip_ms include the test guest's "
      "side, whose instructions this PVM host emulates (~1 us each): not hardware figures");
  ::unlink(uds.c_str());
  ::unlink(config.c_str());
  return 0;
}
