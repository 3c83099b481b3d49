#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/vmm_control.pb.h"
#include "vmm/base/unique_fd.h"
#include "vmm/control/frame.h"
#include "vmm/exit_code.h"
#include "vmm/vmm.h"

namespace ember::control {

// ember-vmm's end of the control channel. It owns a listening Unix socket inherited from
// emberd and serves one controller connection at a time on the VMM loop: a new connection
// replaces the old one, which is how a restarted emberd re-attaches. Requests become calls
// on the Vmm; boot, state changes and the exit go out as events. VMM thread only.
class ControlServer {
 public:
  // `listen_fd` is a listening SOCK_STREAM socket (owned from here on). `vmm` must outlive
  // the server. `own_start_us` is the CLOCK_MONOTONIC µs the VMM's boot timer counts from.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ControlServer>> Create(
      vmm::Vmm& vmm, base::UniqueFd listen_fd, std::uint64_t own_start_us);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // After the loop has ended: tells the controller (if any) how the VM ended, waiting up to
  // one second for the socket to take it.
  void SendExit(const vmm::VmExit& exit);

 private:
  ControlServer(vmm::Vmm& vmm, base::UniqueFd listen_fd, std::uint64_t own_start_us)
      : vmm_(vmm), listen_fd_(std::move(listen_fd)), own_start_us_(own_start_us) {}
  void Accept();
  void OnConnectionReady(std::uint32_t events);
  void CloseConnection(const std::string& why);
  // `fds`: those attached to the request's frame (owned; closed unless a request takes one).
  void Handle(const std::string& payload, std::vector<base::UniqueFd> fds);
  void HandleRequest(const v1::ControlRequest& request, std::vector<base::UniqueFd> fds,
                     v1::ControlResponse* response);
  // Fills response->snapshot on success. `fds`: none, or the directory to write in.
  [[nodiscard]] absl::Status CreateSnapshot(const v1::ControlRequest::CreateSnapshot& request,
                                            std::vector<base::UniqueFd> fds,
                                            v1::ControlResponse* response);
  [[nodiscard]] absl::Status UpdateRateLimits(const v1::ControlRequest::UpdateRateLimits& request);
  void SendEvent(v1::ControlEvent::Kind kind);
  void Send(const v1::VmmMessage& message);
  void Flush();
  [[nodiscard]] v1::VmmStatus Status() const;

  vmm::Vmm& vmm_;
  base::UniqueFd listen_fd_;
  base::UniqueFd conn_;
  FrameReader reader_;
  std::string pending_;  // bytes queued for the controller
  bool watching_out_ = false;
  std::uint64_t own_start_us_;
  std::uint64_t start_request_us_ = 0;
  std::uint64_t boot_time_us_ = 0;
};

// Runs a VM built by `vmm` under a controller: serves `listen_fd` on the VMM loop until the
// VM ends, then reports the exit to the controller. Returns how the VM ended. Called by
// ember-vmm's main for --control-fd.
[[nodiscard]] vmm::VmExit ServeControlled(vmm::Vmm& vmm, int listen_fd,
                                          std::uint64_t own_start_us);

}  // namespace ember::control
