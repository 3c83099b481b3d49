#include "vmm/control/control_server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>
#include <utility>
#include <vector>

#include "virtio/block/block_device.h"
#include "virtio/net/net_device.h"
#include "vmm/base/clock.h"
#include "vmm/base/logging.h"
#include "vmm/base/metrics.h"
#include "vmm/base/status.h"
#include "vmm/drive_config.h"

namespace ember::control {
namespace {

// A controller that stops reading while we queue this much is dropped.
constexpr std::size_t kMaxPendingBytes = 4 << 20;
constexpr std::uint32_t kProtocolVersion = 1;

v1::VmmStatus::State ToProto(vmm::Vmm::State state) {
  switch (state) {
    case vmm::Vmm::State::kCreated: return v1::VmmStatus::CREATED;
    case vmm::Vmm::State::kRunning: return v1::VmmStatus::RUNNING;
    case vmm::Vmm::State::kPaused: return v1::VmmStatus::PAUSED;
    case vmm::Vmm::State::kEnded: return v1::VmmStatus::ENDED;
  }
  return v1::VmmStatus::STATE_UNSPECIFIED;
}

// An unset bucket keeps the device's current one (nullopt); a set one replaces it, and
// size 0 removes the limit. Checked by the same rule as the VM config.
absl::StatusOr<std::optional<virtio::TokenBucketConfig>> Bucket(bool has,
                                                                const v1::TokenBucket& bucket,
                                                                const std::string& where) {
  if (!has) return std::nullopt;
  return vmm::TokenBucketOf(bucket, where);
}

struct LimiterUpdate {
  std::optional<virtio::TokenBucketConfig> bandwidth;
  std::optional<virtio::TokenBucketConfig> ops;
};

absl::StatusOr<LimiterUpdate> ToUpdate(const v1::RateLimiter& limiter, const std::string& where) {
  LimiterUpdate update;
  EMBER_ASSIGN_OR_RETURN(update.bandwidth,
                         Bucket(limiter.has_bandwidth(), limiter.bandwidth(), where + ".bandwidth"));
  EMBER_ASSIGN_OR_RETURN(update.ops, Bucket(limiter.has_ops(), limiter.ops(), where + ".ops"));
  return update;
}

void SetStatus(v1::ControlResponse* response, const absl::Status& status) {
  response->set_code(static_cast<std::int32_t>(status.code()));
  response->set_message(std::string(status.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ControlServer>> ControlServer::Create(
    vmm::Vmm& vmm, base::UniqueFd listen_fd, std::uint64_t own_start_us) {
  int flags = ::fcntl(listen_fd.Get(), F_GETFL);
  if (flags < 0 || ::fcntl(listen_fd.Get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return base::ErrnoError("fcntl(O_NONBLOCK)", "control socket");
  }
  ::fcntl(listen_fd.Get(), F_SETFD, FD_CLOEXEC);
  int type = 0;
  socklen_t len = sizeof(type);
  if (::getsockopt(listen_fd.Get(), SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
    return base::ErrnoError("getsockopt(SO_TYPE)", "--control-fd");
  }
  if (type != SOCK_STREAM) {
    return absl::InvalidArgumentError("--control-fd: not a stream socket");
  }
  std::unique_ptr<ControlServer> server(
      new ControlServer(vmm, std::move(listen_fd), own_start_us));
  ControlServer* self = server.get();
  EMBER_RETURN_IF_ERROR(vmm.loop().Add(self->listen_fd_.Get(), EPOLLIN,
                                       [self](std::uint32_t) { self->Accept(); }));
  // The boot timer fires on a vCPU thread; the event goes out from the VMM thread.
  base::EventLoop* loop = &vmm.loop();
  vmm.OnBoot([self, loop](std::uint64_t us) {
    loop->Post([self, us] {
      std::uint64_t absolute = self->own_start_us_ + us;
      std::uint64_t from = self->start_request_us_ != 0 ? self->start_request_us_
                                                        : self->own_start_us_;
      self->boot_time_us_ = absolute > from ? absolute - from : 1;
      self->SendEvent(v1::ControlEvent::BOOTED);
    });
  });
  return server;
}

ControlServer::~ControlServer() {
  if (conn_) vmm_.loop().Remove(conn_.Get());
  if (listen_fd_) vmm_.loop().Remove(listen_fd_.Get());
}

v1::VmmStatus ControlServer::Status() const {
  v1::VmmStatus status;
  status.set_pid(::getpid());
  status.set_state(ToProto(vmm_.state()));
  status.set_boot_time_us(boot_time_us_);
  status.set_protocol_version(kProtocolVersion);
  return status;
}

void ControlServer::Accept() {
  base::UniqueFd conn(::accept4(listen_fd_.Get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (!conn) return;  // EAGAIN or a connection that went away before we took it
  if (conn_) CloseConnection("a new controller connected");
  conn_ = std::move(conn);
  reader_ = FrameReader();
  pending_.clear();
  watching_out_ = false;
  if (auto status = vmm_.loop().Add(conn_.Get(), EPOLLIN | EPOLLRDHUP,
                                    [this](std::uint32_t events) { OnConnectionReady(events); });
      !status.ok()) {
    EMBER_LOG(kWarn) << "control: cannot watch the controller: " << status.message();
    conn_.Reset();
    return;
  }
  EMBER_LOG(kInfo) << "control: controller connected";
  base::MetricsRegistry::Global().Get("control", "connections")->Add();
  SendEvent(v1::ControlEvent::HELLO);
}

void ControlServer::CloseConnection(const std::string& why) {
  if (!conn_) return;
  EMBER_LOG(kInfo) << "control: closing the controller connection: " << why;
  vmm_.loop().Remove(conn_.Get());
  conn_.Reset();
  pending_.clear();
  watching_out_ = false;
}

void ControlServer::OnConnectionReady(std::uint32_t events) {
  if (events & EPOLLOUT) Flush();
  if (!conn_) return;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    absl::StatusOr<bool> open = reader_.ReadWithFdsFrom(conn_.Get());
    std::string payload;
    std::vector<base::UniqueFd> fds;
    while (conn_) {
      absl::StatusOr<bool> got = reader_.NextWithFds(&payload, &fds);
      if (!got.ok()) {
        // The framing is lost: say why, then drop the connection (the VM keeps running).
        base::MetricsRegistry::Global().Get("control", "bad_frames")->Add();
        v1::VmmMessage message;
        SetStatus(message.mutable_response(), got.status());
        Send(message);
        (void)WriteAll(conn_.Get(), pending_, 100);
        CloseConnection(std::string(got.status().message()));
        return;
      }
      if (!*got) break;
      Handle(payload, std::move(fds));
    }
    if (!conn_) return;
    if (!open.ok()) {
      CloseConnection(std::string(open.status().message()));
    } else if (!*open) {
      CloseConnection("the controller closed the connection");
    }
  }
}

void ControlServer::Handle(const std::string& payload, std::vector<base::UniqueFd> fds) {
  v1::ControlRequest request;
  v1::VmmMessage message;
  v1::ControlResponse* response = message.mutable_response();
  if (!request.ParseFromString(payload)) {
    base::MetricsRegistry::Global().Get("control", "bad_requests")->Add();
    SetStatus(response, absl::InvalidArgumentError("control request does not parse"));
    Send(message);
    return;
  }
  response->set_id(request.id());
  HandleRequest(request, std::move(fds), response);
  Send(message);
}

void ControlServer::HandleRequest(const v1::ControlRequest& request,
                                  std::vector<base::UniqueFd> fds,
                                  v1::ControlResponse* response) {
  base::MetricsRegistry::Global().Get("control", "requests")->Add();
  absl::Status status;
  bool state_changed = false;
  switch (request.op_case()) {
    case v1::ControlRequest::kStart:
      start_request_us_ = request.start().start_time_us();
      status = vmm_.Start();
      state_changed = status.ok();
      break;
    case v1::ControlRequest::kPause:
      status = vmm_.Pause();
      state_changed = status.ok();
      break;
    case v1::ControlRequest::kResume:
      status = vmm_.Resume();
      state_changed = status.ok();
      break;
    case v1::ControlRequest::kStop:
      vmm_.Stop({vmm::kExitOk, request.stop().reason().empty() ? "stopped by the controller"
                                                              : request.stop().reason()});
      break;
    case v1::ControlRequest::kDescribe:
      break;
    case v1::ControlRequest::kGetMetrics:
      response->set_metrics_json(base::MetricsRegistry::Global().ToJson());
      SetStatus(response, absl::OkStatus());
      return;
    case v1::ControlRequest::kCreateSnapshot:
      SetStatus(response, CreateSnapshot(request.create_snapshot(), std::move(fds), response));
      return;
    case v1::ControlRequest::kUpdateRateLimits:
      status = UpdateRateLimits(request.update_rate_limits());
      break;
    case v1::ControlRequest::kUpdateDrive:
      // The VMM opens no file for a swap (its filter has no openat for drive files): the
      // controller opened it, with its own path checks, and attached it to this request.
      if (fds.size() != 1) {
        status = absl::InvalidArgumentError(
            "update_drive: attach the new file's fd to the request (SCM_RIGHTS), exactly one");
        break;
      }
      status = vmm_.UpdateDrive(request.update_drive().drive_id(), request.update_drive().path(),
                                std::move(fds[0]));
      if (status.ok()) base::MetricsRegistry::Global().Get("control", "drive_updates")->Add();
      break;
    case v1::ControlRequest::kSendCtrlAltDel:
      status = vmm_.SendCtrlAltDel();
      break;
    case v1::ControlRequest::OP_NOT_SET:
      status = absl::InvalidArgumentError("control request has no operation");
      break;
  }
  SetStatus(response, status);
  if (status.ok()) *response->mutable_status() = Status();
  if (state_changed) SendEvent(v1::ControlEvent::STATE);
}

absl::Status ControlServer::CreateSnapshot(const v1::ControlRequest::CreateSnapshot& request,
                                           std::vector<base::UniqueFd> fds,
                                           v1::ControlResponse* response) {
  if (request.state_path().empty() || request.state_path()[0] != '/' ||
      request.memory_path().empty() || request.memory_path()[0] != '/') {
    return absl::InvalidArgumentError(
        "create_snapshot: state_path and memory_path must be absolute paths");
  }
  if (fds.size() > 1) {
    return absl::InvalidArgumentError(
        "create_snapshot: attach at most one fd, the directory to write the files in");
  }
  std::uint64_t start = base::MonotonicMicros();
  EMBER_RETURN_IF_ERROR(
      vmm_.CreateSnapshot({request.state_path(), request.memory_path(), request.diff(),
                           /*durable=*/!request.no_sync(), fds.empty() ? -1 : fds[0].Get()}));
  v1::SnapshotResult* result = response->mutable_snapshot();
  result->set_state_path(request.state_path());
  result->set_memory_path(request.memory_path());
  result->set_duration_us(base::MonotonicMicros() - start);
  return absl::OkStatus();
}

absl::Status ControlServer::UpdateRateLimits(const v1::ControlRequest::UpdateRateLimits& request) {
  // Every id and bucket is checked before any device changes.
  std::vector<std::pair<virtio::block::BlockDevice*, LimiterUpdate>> drives;
  for (int i = 0; i < request.drives_size(); ++i) {
    const auto& limit = request.drives(i);
    std::string where = "drives[" + std::to_string(i) + "]";
    virtio::block::BlockDevice* device = vmm_.virtio_devices().FindDrive(limit.drive_id());
    if (device == nullptr) {
      return absl::NotFoundError(where + ".drive_id: the VM has no drive \"" + limit.drive_id() +
                                 "\"");
    }
    EMBER_ASSIGN_OR_RETURN(LimiterUpdate update,
                           ToUpdate(limit.rate_limiter(), where + ".rate_limiter"));
    drives.emplace_back(device, std::move(update));
  }
  struct NetUpdate {
    virtio::net::NetDevice* device;
    LimiterUpdate rx;
    LimiterUpdate tx;
  };
  std::vector<NetUpdate> interfaces;
  for (int i = 0; i < request.interfaces_size(); ++i) {
    const auto& limit = request.interfaces(i);
    std::string where = "interfaces[" + std::to_string(i) + "]";
    virtio::net::NetDevice* device = vmm_.virtio_devices().FindInterface(limit.iface_id());
    if (device == nullptr) {
      return absl::NotFoundError(where + ".iface_id: the VM has no network interface \"" +
                                 limit.iface_id() + "\"");
    }
    NetUpdate update{device, {}, {}};
    EMBER_ASSIGN_OR_RETURN(update.rx, ToUpdate(limit.rx_rate_limiter(), where + ".rx_rate_limiter"));
    EMBER_ASSIGN_OR_RETURN(update.tx, ToUpdate(limit.tx_rate_limiter(), where + ".tx_rate_limiter"));
    interfaces.push_back(std::move(update));
  }
  for (auto& [device, update] : drives) device->UpdateRateLimiter(update.bandwidth, update.ops);
  for (NetUpdate& update : interfaces) {
    update.device->UpdateRateLimiters(update.rx.bandwidth, update.rx.ops, update.tx.bandwidth,
                                      update.tx.ops);
  }
  base::MetricsRegistry::Global().Get("control", "rate_limit_updates")->Add();
  EMBER_LOG(kInfo) << "control: rate limits updated on " << drives.size() << " drive(s) and "
                   << interfaces.size() << " interface(s)";
  return absl::OkStatus();
}

void ControlServer::SendEvent(v1::ControlEvent::Kind kind) {
  v1::VmmMessage message;
  v1::ControlEvent* event = message.mutable_event();
  event->set_kind(kind);
  *event->mutable_status() = Status();
  if (kind == v1::ControlEvent::BOOTED) event->set_boot_time_us(boot_time_us_);
  Send(message);
}

void ControlServer::Send(const v1::VmmMessage& message) {
  if (!conn_) return;  // no controller: events are not kept; HELLO carries the state
  if (auto status = AppendFrame(message, &pending_); !status.ok()) {
    EMBER_LOG(kWarn) << "control: " << status.message();
    return;
  }
  if (pending_.size() > kMaxPendingBytes) {
    CloseConnection("the controller is not reading");
    return;
  }
  Flush();
}

void ControlServer::Flush() {
  if (!conn_) return;
  absl::StatusOr<bool> done = FlushSome(conn_.Get(), &pending_);
  if (!done.ok()) {
    CloseConnection(std::string(done.status().message()));
    return;
  }
  bool want_out = !*done;
  if (want_out != watching_out_) {
    watching_out_ = want_out;
    (void)vmm_.loop().Modify(conn_.Get(), EPOLLIN | EPOLLRDHUP | (want_out ? EPOLLOUT : 0u));
  }
}

void ControlServer::SendExit(const vmm::VmExit& exit) {
  // A controller that connected while the loop was ending is still waiting in the backlog.
  if (!conn_) Accept();
  if (!conn_) return;
  v1::VmmMessage message;
  v1::ControlEvent* event = message.mutable_event();
  event->set_kind(v1::ControlEvent::EXITED);
  *event->mutable_status() = Status();
  event->set_exit_code(exit.code);
  event->set_reason(exit.reason);
  if (AppendFrame(message, &pending_).ok()) (void)WriteAll(conn_.Get(), pending_, 1000);
  pending_.clear();
}

vmm::VmExit ServeControlled(vmm::Vmm& vmm, int listen_fd, std::uint64_t own_start_us) {
  // A controller that goes away must not kill the VM with SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  auto server = ControlServer::Create(vmm, base::UniqueFd(listen_fd), own_start_us);
  if (!server.ok()) {
    return {server.status().code() == absl::StatusCode::kInvalidArgument ? vmm::kExitBadInput
                                                                          : vmm::kExitError,
            "control: " + std::string(server.status().message())};
  }
  vmm::VmExit exit = vmm.Serve();
  (*server)->SendExit(exit);
  return exit;
}

}  // namespace ember::control
