#include "rootfs/agent/agent.h"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <utility>

#include "vmm/base/status.h"

#include "rootfs/agent/connection.h"
#include "rootfs/agent/exec_session.h"
#include "rootfs/agent/post_restore.h"

#ifndef EMBER_VERSION
#error "EMBER_VERSION comes from CMake"
#endif

namespace ember::agent {

std::uint64_t RandomU64() {
  std::uint64_t value = 0;
  // Blocks only before the kernel's generator is first seeded, which the guest's boot does.
  while (::getrandom(&value, sizeof(value), 0) != static_cast<ssize_t>(sizeof(value))) {
  }
  return value;
}

Agent::Agent(AgentOptions options) : options_(std::move(options)), boot_id_(RandomU64()) {}

absl::StatusOr<v1::ReadyInfo> Agent::Info() {
  v1::ReadyInfo info;
  info.set_protocol_version(v1::AGENT_PROTOCOL_VERSION_1);
  info.set_agent_version("ember-agent " EMBER_VERSION);
  absl::StatusOr<v1::ImageConfig> image = LoadImageConfig(options_.image_config_path);
  if (!image.ok()) return image.status();
  *info.mutable_image() = std::move(*image);
  info.set_boot_id(boot_id_.load());
  timespec now{};
  ::clock_gettime(CLOCK_BOOTTIME, &now);
  info.set_uptime_ns(static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000u +
                     static_cast<std::uint64_t>(now.tv_nsec));
  info.set_handler_running(handler_.Running());
  return info;
}

void Agent::ServeExec(Connection& conn, v1::ExecRequest request) {
  if (request.env().empty() || request.cwd().empty()) {
    absl::StatusOr<v1::ImageConfig> image = LoadImageConfig(options_.image_config_path);
    if (!image.ok()) {
      conn.SendError(image.status());
      return;
    }
    if (request.env().empty()) *request.mutable_env() = image->env();
    if (request.cwd().empty()) request.set_cwd(image->working_dir());
  }
  RunExec(conn, request, processes_);
}

absl::Status Agent::StartHandler(const v1::StartHandlerRequest& request) {
  EMBER_ASSIGN_OR_RETURN(v1::ImageConfig image, LoadImageConfig(options_.image_config_path));
  if (request.argv().empty()) {
    EMBER_ASSIGN_OR_RETURN(SpawnSpec spec, SpecFromImage(image));
    return handler_.Start(std::move(spec));
  }
  SpawnSpec spec;
  spec.argv.assign(request.argv().begin(), request.argv().end());
  spec.env.assign(request.env().begin(), request.env().end());
  if (spec.env.empty()) spec.env.assign(image.env().begin(), image.env().end());
  spec.cwd = request.cwd().empty() ? image.working_dir() : request.cwd();
  spec.uid = request.uid();
  spec.gid = request.gid();
  return handler_.Start(std::move(spec));
}

void Agent::Serve(base::UniqueFd fd) {
  Connection conn(std::move(fd));
  absl::StatusOr<std::optional<v1::AgentRequest>> request = conn.Read(kFirstRequestTimeoutMs);
  if (!request.ok()) {
    conn.SendError(request.status());
    return;
  }
  if (!request->has_value()) return;  // connected and left
  v1::AgentResponse response;
  absl::Status status;
  switch ((*request)->kind_case()) {
    case v1::AgentRequest::kReady: {
      absl::StatusOr<v1::ReadyInfo> info = Info();
      if (!info.ok()) {
        status = info.status();
        break;
      }
      *response.mutable_ready() = std::move(*info);
      break;
    }
    case v1::AgentRequest::kExec:
      ServeExec(conn, std::move(*(*request)->mutable_exec()));
      return;
    case v1::AgentRequest::kSignal: {
      const v1::SignalRequest& signal = (*request)->signal();
      status = signal.exec_id().empty()
                   ? handler_.Signal(signal.signal(), signal.all())
                   : processes_.Signal(signal.exec_id(), signal.signal(), signal.all());
      if (status.ok()) response.mutable_ack();
      break;
    }
    case v1::AgentRequest::kResize: {
      const v1::ResizeRequest& resize = (*request)->resize();
      status = processes_.Resize(resize.exec_id(), resize.rows(), resize.cols());
      if (status.ok()) response.mutable_ack();
      break;
    }
    case v1::AgentRequest::kStartHandler:
      status = StartHandler((*request)->start_handler());
      if (status.ok()) response.mutable_ack();
      break;
    case v1::AgentRequest::kInvoke:
      status = handler_.Invoke(
          (*request)->invoke().payload(), (*request)->invoke().timeout_ms(),
          [this]() -> absl::StatusOr<SpawnSpec> {
            EMBER_ASSIGN_OR_RETURN(v1::ImageConfig image,
                                   LoadImageConfig(options_.image_config_path));
            return SpecFromImage(image);
          },
          [&conn](const v1::InvokeResult& piece) {
            v1::AgentResponse frame;
            *frame.mutable_invoke_result() = piece;
            return conn.Send(frame);
          });
      if (status.ok()) return;  // the pieces were the answer
      break;
    case v1::AgentRequest::kPostRestore: {
      absl::StatusOr<v1::PostRestoreResult> result =
          ApplyPostRestore((*request)->post_restore(), options_.set_clock);
      // Drawn after the new entropy went in; a clone is no longer its parent even when a
      // step failed.
      boot_id_.store(RandomU64());
      if (!result.ok()) {
        status = result.status();
        break;
      }
      result->set_boot_id(boot_id_.load());
      *response.mutable_post_restore_result() = std::move(*result);
      break;
    }
    case v1::AgentRequest::kShutdown:
      response.mutable_ack();
      (void)conn.Send(response);
      ::sync();
      // Not exit(): other threads are serving, and static destructors must not run under
      // them.
      ::_exit(kExitShutdown);
    case v1::AgentRequest::kStdinData:
      status = absl::InvalidArgumentError("stdin_data must follow an exec on its connection");
      break;
    case v1::AgentRequest::KIND_NOT_SET:
      status = absl::UnimplementedError("the request names nothing this agent knows");
      break;
  }
  if (!status.ok()) {
    conn.SendError(status);
    return;
  }
  (void)conn.Send(response);
}

}  // namespace ember::agent
