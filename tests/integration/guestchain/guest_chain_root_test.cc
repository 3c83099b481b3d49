// The guest side chained as in a guest, minus the kernel: an OCI image archive built here (one
// layer with a static program, a config with Entrypoint, Cmd, Env, WorkingDir and User) ->
// ember-rootfs -> the image loop-mounted in a private mount namespace -> ember-init as PID 1 of
// new pid+mount+net+uts namespaces chrooted into it, starting the image's own ember-agent on a
// Unix socket in a directory bind-mounted from the host -> the host's agent client: the ready
// event and Ready (the image config as the OCI config said), Exec of the image's program,
// Invoke through the handler started from the entrypoint, Shutdown -> init powers off (in a pid
// namespace the kernel ends it with SIGHUP) and nothing of the guest is left. Needs root.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/files.h"
#include "tests/support/namespaced_init.h"
#include "tests/support/process.h"
#include "vmm/agent_client/agent_client.h"

namespace ember::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
namespace fs = std::filesystem;

// Where the host's directory appears in the guest; the layer makes the mount point.
constexpr char kHostDirInGuest[] = "/ember-host";

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// `argv` must succeed; its stdout.
std::string MustRun(const std::vector<std::string>& argv) {
  ProcessResult result = RunProcess(argv, seconds(60));
  EXPECT_EQ(result.exit_code, 0) << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": "
                                 << result.err;
  return result.out;
}

// Stores `file` as a blob of the OCI layout at `layout`; its descriptor's digest and size.
std::string AddBlob(const std::string& layout, const std::string& file, const std::string& media) {
  std::string sum = MustRun({"/usr/bin/sha256sum", file}).substr(0, 64);
  fs::create_directories(layout + "/blobs/sha256");
  fs::copy_file(file, layout + "/blobs/sha256/" + sum);
  return R"({"mediaType":")" + media + R"(","digest":"sha256:)" + sum + R"(","size":)" +
         std::to_string(fs::file_size(file)) + "}";
}

// An OCI archive as `podman save --format oci-archive` writes it: one layer holding
// /usr/bin/app (the test's static program), /srv and the host directory's mount point.
std::string BuildOciArchive(const std::string& work) {
  std::string tree = work + "/layer";
  fs::create_directories(tree + "/usr/bin");
  fs::create_directories(tree + "/srv");
  fs::create_directories(tree + kHostDirInGuest);
  fs::copy_file(GUEST_APP_PATH, tree + "/usr/bin/app");
  fs::permissions(tree + "/usr/bin/app", fs::perms(0755));
  MustRun({"/usr/bin/tar", "--numeric-owner", "--owner=0", "--group=0", "-C", tree, "-cf",
           work + "/layer.tar", "usr", "srv", std::string(kHostDirInGuest).substr(1)});

  std::string layout = work + "/layout";
  std::string layer =
      AddBlob(layout, work + "/layer.tar", "application/vnd.oci.image.layer.v1.tar");
  std::string layer_digest = layer.substr(layer.find("sha256:"), 71);
  WriteText(work + "/config.json",
            R"({"architecture":"amd64","os":"linux","config":{)"
            R"("Entrypoint":["/usr/bin/app","--serve"],"Cmd":["fn"],)"
            R"("Env":["PATH=/usr/bin:/bin","MODE=prod"],"WorkingDir":"/srv","User":"1000:1000"},)"
            R"("rootfs":{"type":"layers","diff_ids":[")" +
                layer_digest + R"("]}})");
  std::string config =
      AddBlob(layout, work + "/config.json", "application/vnd.oci.image.config.v1+json");
  WriteText(work + "/manifest.json",
            R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
            R"("config":)" +
                config + R"(,"layers":[)" + layer + "]}");
  std::string manifest =
      AddBlob(layout, work + "/manifest.json", "application/vnd.oci.image.manifest.v1+json");
  manifest.insert(manifest.size() - 1, R"(,"platform":{"architecture":"amd64","os":"linux"})");
  WriteText(layout + "/index.json", R"({"schemaVersion":2,"manifests":[)" + manifest + "]}");
  WriteText(layout + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  std::string archive = work + "/image.oci.tar";
  MustRun({"/usr/bin/tar", "-C", layout, "-cf", archive, "oci-layout", "index.json", "blobs"});
  return archive;
}

// ember-init in its namespaces, the image loop-mounted as its root and the host's directory
// bound into it.
class Guest : public NamespacedInit {
 public:
  void Start(const std::string& image, const std::string& root, const std::string& host_dir,
             const std::string& cmdline) {
    std::string error = Clone(root, cmdline);
    ASSERT_EQ(error, "");
    InMountNamespace({"/usr/bin/mount", "-o", "loop", image, root});
    InMountNamespace({"/usr/bin/mount", "--bind", host_dir, root + kHostDirInGuest});
    Release();
  }

  // The command names of `pids`, for messages.
  [[nodiscard]] static std::string Describe(const std::vector<pid_t>& pids) {
    std::string text;
    for (pid_t pid : pids) {
      text += std::to_string(pid) + ":" + ReadFile("/proc/" + std::to_string(pid) + "/comm");
    }
    return text;
  }

 private:
  void InMountNamespace(std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"/usr/bin/nsenter", "-t", std::to_string(pid()), "-m"});
    ProcessResult result = RunProcess(argv, seconds(30));
    ASSERT_EQ(result.exit_code, 0) << argv[5] << ": " << result.out << result.err;
  }
};

// Runs `request` to its end; stdout and stderr as they came.
struct ExecOutput {
  absl::StatusOr<agent_client::ExecResult> result;
  std::string out, err;
};
ExecOutput Exec(agent_client::AgentClient& client, const v1::ExecRequest& request) {
  ExecOutput output;
  output.result = client.Exec(request, [&](v1::Output::Stream stream, std::string_view data) {
    (stream == v1::Output::STDERR ? output.err : output.out).append(data);
  });
  return output;
}

std::vector<std::string> Strings(const google::protobuf::RepeatedPtrField<std::string>& field) {
  return {field.begin(), field.end()};
}

TEST(GuestChain, OciImageServesTheHostThroughInitAndAgentThenPowersOff) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, loop mounts)";
  if (!GUEST_PROGRAMS_STATIC) {
    GTEST_SKIP() << "ember-init and ember-agent are not static in this build (sanitizers)";
  }
  ScopedTempDir work("guest-chain");
  std::string host_dir = work.path() + "/host";
  std::string root = work.path() + "/root";
  fs::create_directories(host_dir);
  fs::create_directories(root);

  std::string archive = BuildOciArchive(work.path());
  std::string image = work.path() + "/root.ext4";
  ProcessResult built = RunProcess({BinPath("ember-rootfs"), archive, image}, seconds(120));
  ASSERT_EQ(built.exit_code, 0) << built.err;

  absl::StatusOr<agent_client::ReadyListener> ready_listener =
      agent_client::ReadyListener::At(host_dir + "/ready.sock");
  ASSERT_TRUE(ready_listener.ok()) << ready_listener.status();
  Guest guest;
  ASSERT_NO_FATAL_FAILURE(
      guest.Start(image, root, host_dir,
                  std::string("ember.hostname=chain ember.agent_args=\"--unix ") + kHostDirInGuest +
                      "/agent.sock --ready-unix " + kHostDirInGuest + "/ready.sock\""));

  // The agent announces itself once it listens; the image config is the OCI config's.
  absl::StatusOr<v1::ReadyInfo> announced = ready_listener->Accept(30'000);
  ASSERT_TRUE(announced.ok()) << announced.status() << "\n" << guest.console();
  const v1::ImageConfig& config = announced->image();
  EXPECT_EQ(Strings(config.entrypoint()), (std::vector<std::string>{"/usr/bin/app", "--serve"}));
  EXPECT_EQ(Strings(config.cmd()), (std::vector<std::string>{"fn"}));
  EXPECT_EQ(Strings(config.env()), (std::vector<std::string>{"PATH=/usr/bin:/bin", "MODE=prod"}));
  EXPECT_EQ(config.working_dir(), "/srv");
  EXPECT_EQ(config.user(), "1000:1000");
  EXPECT_EQ(announced->agent_version().rfind("ember-agent ", 0), 0u) << announced->agent_version();

  agent_client::AgentClient client(agent_client::Endpoint::Unix(host_dir + "/agent.sock"));
  absl::StatusOr<v1::ReadyInfo> ready = client.Ready();
  ASSERT_TRUE(ready.ok()) << ready.status() << "\n" << guest.console();
  EXPECT_EQ(ready->boot_id(), announced->boot_id()) << "not the agent that announced itself";
  EXPECT_EQ(ready->image().entrypoint_size(), 2);
  EXPECT_FALSE(ready->handler_running());

  // The image's program, found in the image's PATH, run in its working directory with its env.
  v1::ExecRequest greet;
  greet.add_argv("app");
  greet.add_argv("greet");
  greet.add_argv("chain");
  ExecOutput greeted = Exec(client, greet);
  ASSERT_TRUE(greeted.result.ok()) << greeted.result.status() << "\n" << guest.console();
  EXPECT_EQ(greeted.out, "hello chain from /srv MODE=prod\n");
  EXPECT_EQ(greeted.err, "greeted\n");
  EXPECT_EQ(greeted.result->exit.exit_code(), 7);
  EXPECT_EQ(greeted.result->exit.signal(), 0);
  // Its pid is the guest's: init is 1 and the agent came before it.
  EXPECT_GT(greeted.result->started.pid(), 2);
  EXPECT_LT(greeted.result->started.pid(), 100);

  // The host's programs are not in the guest's root.
  v1::ExecRequest host_program;
  host_program.add_argv("/usr/bin/nsenter");
  ExecOutput refused = Exec(client, host_program);
  EXPECT_EQ(refused.result.status().code(), absl::StatusCode::kNotFound) << refused.result.status();

  // The resident handler, started from the entrypoint + cmd as the image's user, serves both.
  absl::StatusOr<agent_client::InvokeOutcome> first = client.Invoke("first call", 20'000);
  ASSERT_TRUE(first.ok()) << first.status() << "\n" << guest.console();
  std::size_t pid_at = first->output.find(" pid=");
  std::size_t uid_at = first->output.find(" uid=");
  ASSERT_TRUE(pid_at != std::string::npos && uid_at > pid_at) << first->output;
  const std::string handler_pid = first->output.substr(pid_at, uid_at - pid_at);
  EXPECT_EQ(first->output, "fn:FIRST CALL" + handler_pid + " uid=1000 cwd=/srv MODE=prod");
  absl::StatusOr<agent_client::InvokeOutcome> second = client.Invoke("again", 20'000);
  ASSERT_TRUE(second.ok()) << second.status() << "\n" << guest.console();
  EXPECT_EQ(second->output, "fn:AGAIN" + handler_pid + " uid=1000 cwd=/srv MODE=prod");
  absl::StatusOr<v1::ReadyInfo> serving = client.Ready();
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_TRUE(serving->handler_running());
  std::vector<pid_t> running = guest.ProcessesInNamespace();
  EXPECT_EQ(running.size(), 3u) << "init, agent and handler expected: " << guest.Describe(running);
  EXPECT_NE(MustRun({"/usr/sbin/losetup", "-j", image}), "") << "the image is not on a loop device";

  // Shutdown: the agent acknowledges and exits 0, init powers off through reboot(2).
  absl::Status shutdown = client.Shutdown();
  ASSERT_TRUE(shutdown.ok()) << shutdown << "\n" << guest.console();
  std::optional<int> status = guest.WaitForEnd(seconds(30));
  ASSERT_TRUE(status) << "init still runs\n" << guest.console();
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGHUP) << "wait status " << *status;
  EXPECT_NE(guest.console().find("exited with status 0: powering off"), std::string::npos)
      << guest.console();

  // Nothing of the guest runs on, and nothing serves on its socket.
  std::vector<pid_t> left;
  auto deadline = std::chrono::steady_clock::now() + seconds(10);
  do {
    left = guest.ProcessesInNamespace();
    if (left.empty()) break;
    std::this_thread::sleep_for(milliseconds(100));
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_TRUE(left.empty()) << guest.Describe(left);
  agent_client::AgentClient after(agent_client::Endpoint::Unix(host_dir + "/agent.sock"),
                                  agent_client::Options{.connect_timeout_ms = 1'000});
  EXPECT_EQ(after.Ready().status().code(), absl::StatusCode::kUnavailable);
  // The image's loop device went with the mount namespace: the image is free again.
  std::string loops;
  do {
    loops = MustRun({"/usr/sbin/losetup", "-j", image});
    if (loops.empty()) break;
    std::this_thread::sleep_for(milliseconds(100));
  } while (std::chrono::steady_clock::now() < deadline + seconds(10));
  EXPECT_EQ(loops, "");
}

}  // namespace
}  // namespace ember::testing
