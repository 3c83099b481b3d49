#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "vmm/base/guest_memory.h"
#include "vmm/base/unique_fd.h"

namespace ember::vmm {

// Guest memory served by a page-fault handler in another process, as Firecracker's Uffd
// memory backend does it: ember-vmm creates the userfaultfd and registers guest memory with
// it (only the process that owns the mappings can), connects to the handler's Unix socket and
// sends it the uffd (SCM_RIGHTS) in one message with a JSON array describing each region:
//   [{"base_host_virt_addr": A, "size": S, "offset": O, "page_size": 4096,
//     "page_size_kib": 4096}, ...]
// base_host_virt_addr is where the region lies in ember-vmm, offset where its contents start
// in the snapshot's memory file (regions are laid back to back), page_size is in bytes;
// page_size_kib repeats it, also in bytes, as Firecracker still sends that deprecated name.
// Nothing else crosses the socket. The handler answers each fault with UFFDIO_COPY (or
// UFFDIO_ZEROPAGE); the uffd asks for UFFD_FEATURE_EVENT_REMOVE as Firecracker's does, so a
// handler written for Firecracker finds what it expects (Ember never removes guest pages).
//
// Unlike Firecracker, ember-vmm does not go on blindly: Create waits until the handler has
// taken the message off the socket, and the VMM watches the handler's process (pidfd, when the
// handler's pid is visible from the VMM's pid namespace) and ends the VM with an error if it
// exits, since no fault could be served again (Vmm::Serve then releases the uffd so the
// vCPUs waiting on faults can leave). A handler that is alive but stops answering leaves the
// faulting thread waiting, as in Firecracker: a vCPU then cannot be paused (PATCH /vm times
// out), but the wait is killable, and the VMM dies with its API front.
//
// Owned by the Vmm for the VM's whole life: the uffd must stay open while any page may fault.
class UffdHandoff {
 public:
  // How long Create waits for the handler to accept the connection and to take the message.
  static constexpr std::chrono::seconds kHandshakeTimeout{10};

  // Registers every region of `memory` (anonymous, laid out like the memory file) and hands
  // the uffd to the handler listening at `socket_path`. InvalidArgument, naming the socket,
  // when nothing listens there, the handler closes the connection without taking the uffd, or
  // does not take it within kHandshakeTimeout; other errors are the host's.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<UffdHandoff>> Create(
      const base::GuestMemory& memory, const std::string& socket_path);

  // The handler's pidfd (borrowed), or -1 when its pid is not visible here.
  [[nodiscard]] int handler_pidfd() const { return pidfd_.Get(); }
  [[nodiscard]] pid_t handler_pid() const { return handler_pid_; }
  [[nodiscard]] const std::string& socket_path() const { return socket_path_; }

 private:
  UffdHandoff() = default;

  std::string socket_path_;
  base::UniqueFd uffd_;
  base::UniqueFd socket_;  // kept open: closing it tells nothing a handler needs to know
  base::UniqueFd pidfd_;
  pid_t handler_pid_ = 0;
};

}  // namespace ember::vmm
