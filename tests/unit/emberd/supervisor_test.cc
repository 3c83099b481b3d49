#include "vmm/emberd/supervisor.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "vmm/control/frame.h"

namespace ember::emberd {
namespace {

// A supervised VMM that remembers what the supervisor told it.
class RecordingVmm final : public SupervisedVmm {
 public:
  using SupervisedVmm::SupervisedVmm;
  std::optional<v1::ExitInfo> exit;  // guarded by mu
  int hellos = 0;                    // guarded by mu

 protected:
  void OnHello(const v1::VmmStatus&) override { ++hellos; }
  void OnState(v1::VmmStatus::State) override {}
  void OnBooted(std::uint64_t) override {}
  void OnExit(const v1::ExitInfo& info) override { exit = info; }
};

// The VMM's end of a control connection, played by the test.
class FakeVmmEnd {
 public:
  explicit FakeVmmEnd(int fd) : fd_(fd) {}
  ~FakeVmmEnd() { Close(); }
  int fd() const { return fd_; }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  v1::ControlRequest ReadRequest() {
    std::string payload;
    while (true) {
      absl::StatusOr<bool> got = reader_.Next(&payload);
      if (!got.ok() || *got) break;
      char buf[4096];
      ssize_t n = ::read(fd_, buf, sizeof(buf));
      if (n <= 0) break;
      reader_.Feed(std::string_view(buf, static_cast<std::size_t>(n)));
    }
    v1::ControlRequest request;
    EXPECT_TRUE(request.ParseFromString(payload));
    return request;
  }

  void Send(const v1::VmmMessage& message) {
    std::string frame;
    ASSERT_TRUE(control::AppendFrame(message, &frame).ok());
    ASSERT_TRUE(control::WriteAll(fd_, frame, 1000).ok());
  }

  // Answers the next request with `code` and `text`.
  void Answer(int code, const std::string& text) {
    v1::ControlRequest request = ReadRequest();
    v1::VmmMessage message;
    message.mutable_response()->set_id(request.id());
    message.mutable_response()->set_code(code);
    message.mutable_response()->set_message(text);
    Send(message);
  }

 private:
  int fd_;
  control::FrameReader reader_;
};

class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto supervisor = Supervisor::Create(std::chrono::milliseconds(300));
    ASSERT_TRUE(supervisor.ok()) << supervisor.status();
    supervisor_ = std::move(*supervisor);
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    // emberd's end is non-blocking, as ConnectUnix makes it: the supervisor reads it dry.
    ASSERT_EQ(::fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
    emberd_end_ = base::UniqueFd(fds[0]);
    vmm_end_ = std::make_unique<FakeVmmEnd>(fds[1]);
  }

  void Attach(pid_t pid = 0) {
    ASSERT_TRUE(supervisor_->Attach(vmm_, std::move(emberd_end_), pid, pid > 0).ok());
  }

  absl::StatusOr<v1::ControlResponse> CallWhileTheVmmAnswers(int code, const std::string& text) {
    std::thread peer([&] { vmm_end_->Answer(code, text); });
    v1::ControlRequest request;
    request.mutable_pause();
    absl::StatusOr<v1::ControlResponse> result = supervisor_->Call(*vmm_, request);
    peer.join();
    return result;
  }

  std::unique_ptr<Supervisor> supervisor_;
  std::shared_ptr<RecordingVmm> vmm_ = std::make_shared<RecordingVmm>("vm1");
  base::UniqueFd emberd_end_;
  std::unique_ptr<FakeVmmEnd> vmm_end_;
};

TEST_F(SupervisorTest, CallReturnsAnOkResponse) {
  Attach();
  absl::StatusOr<v1::ControlResponse> result = CallWhileTheVmmAnswers(0, "");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->code(), 0);
}

TEST_F(SupervisorTest, CallTurnsAnErrorResponseIntoItsStatusNamingTheVm) {
  Attach();
  absl::StatusOr<v1::ControlResponse> result = CallWhileTheVmmAnswers(5, "no drive \"d\"");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(result.status().message(), "VM \"vm1\": no drive \"d\"");
}

TEST_F(SupervisorTest, CallOfAVmmThatGoesAwayIsUnavailable) {
  Attach();
  std::thread peer([&] {
    (void)vmm_end_->ReadRequest();
    vmm_end_->Close();
  });
  v1::ControlRequest request;
  request.mutable_pause();
  absl::StatusOr<v1::ControlResponse> result =
      supervisor_->Call(*vmm_, request, Supervisor::Wait::kWhileConnected);
  peer.join();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(result.status().message().find("went away"), std::string::npos) << result.status();
  std::lock_guard lock(vmm_->mu);
  EXPECT_FALSE(vmm_->connected());
}

TEST_F(SupervisorTest, CallOfAVmmThatDoesNotAnswerIsUnavailable) {
  Attach();
  v1::ControlRequest request;
  request.mutable_pause();
  absl::StatusOr<v1::ControlResponse> result = supervisor_->Call(*vmm_, request);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(result.status().message().find("did not answer in time"), std::string::npos);
}

TEST_F(SupervisorTest, ABuildFailureAndTheExitCodeReachTheExitHook) {
  // A child that says why it failed and exits 2, as ember-vmm does. The frame is made before
  // the fork: the child of a threaded process only writes and exits.
  v1::VmmMessage message;
  message.mutable_event()->set_kind(v1::ControlEvent::BUILD_FAILED);
  message.mutable_event()->mutable_build_failure()->set_code(3);
  message.mutable_event()->mutable_build_failure()->set_message("kernel: no such file");
  message.mutable_event()->mutable_build_failure()->set_exit_code(2);
  std::string frame;
  ASSERT_TRUE(control::AppendFrame(message, &frame).ok());
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ssize_t written = ::write(vmm_end_->fd(), frame.data(), frame.size());
    ::_exit(written == static_cast<ssize_t>(frame.size()) ? 2 : 1);
  }
  vmm_end_->Close();
  Attach(pid);
  std::unique_lock lock(vmm_->mu);
  ASSERT_TRUE(Supervisor::WaitForExit(*vmm_, lock, std::chrono::seconds(10)));
  ASSERT_TRUE(vmm_->exit.has_value());
  EXPECT_EQ(vmm_->exit->exit_code(), 2);
  EXPECT_NE(vmm_->exit->reason().find("kernel: no such file"), std::string::npos);
  ASSERT_TRUE(vmm_->build_failure().has_value());
  EXPECT_EQ(vmm_->hellos, 0);
  EXPECT_EQ(BuildFailureStatus("vm1", false, *vmm_->build_failure()).message(),
            "config: kernel: no such file");
}

TEST(ResponseStatus, AnUnknownCodeIsInternal) {
  v1::ControlResponse response;
  response.set_code(99);
  response.set_message("odd");
  absl::Status status = ResponseStatus("vm1", response);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_NE(status.message().find("99"), std::string::npos) << status;
  response.set_code(-1);
  EXPECT_EQ(ResponseStatus("vm1", response).code(), absl::StatusCode::kInternal);
}

TEST(BuildFailureStatus, TheUsersInputNamesItsFieldAndAHostErrorNamesTheVm) {
  v1::BuildFailure failure;
  failure.set_code(static_cast<int>(absl::StatusCode::kInvalidArgument));
  failure.set_message("bad state file");
  absl::Status snapshot = BuildFailureStatus("vm1", /*restore=*/true, failure);
  EXPECT_EQ(snapshot.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(snapshot.message(), "snapshot: bad state file");
  failure.set_code(static_cast<int>(absl::StatusCode::kInternal));
  failure.set_message("io_uring_setup: ENOMEM");
  absl::Status host = BuildFailureStatus("vm1", /*restore=*/false, failure);
  EXPECT_EQ(host.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(host.message(), "VM \"vm1\": io_uring_setup: ENOMEM");
  failure.set_code(0);  // no code given: not a success
  EXPECT_EQ(BuildFailureStatus("vm1", false, failure).code(), absl::StatusCode::kInternal);
}

TEST(RecordedExit, ReadsTheCodeAndReasonOfTheFirstLineOnly) {
  v1::ExitInfo exit = RecordedExit(std::string("3 triple fault\nrest"));
  EXPECT_EQ(exit.exit_code(), 3);
  EXPECT_EQ(exit.reason(), "triple fault (while emberd was not running)");
  EXPECT_EQ(RecordedExit(std::string("garbage")).exit_code(), -1);
  EXPECT_EQ(RecordedExit(absl::NotFoundError("no record")).exit_code(), -1);
}

}  // namespace
}  // namespace ember::emberd
