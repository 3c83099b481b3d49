#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
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
// taken the message off the socket, and the VMM watches the handler's process (exit_watch)
// and ends the VM with an error if it exits, since no fault could be served again (Vmm::Serve
// then releases the uffd so the vCPUs waiting on faults can leave). The kernel would not tell
// anyone: the VMM's own reference keeps the uffd alive, so a fault would wait for ever (and
// were it to drop that reference, the handler's exit would turn every page it never copied
// into a zero page under the running guest). A handler that is alive but stops answering leaves the
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

  // The handler's pidfd (borrowed; SO_PEERPIDFD, or pidfd_open of a visible pid), or -1 on a
  // kernel before 6.5 when its pid is not visible from this pid namespace.
  [[nodiscard]] int handler_pidfd() const { return pidfd_.Get(); }
  // Its pid in this pid namespace; 0 when it has none here.
  [[nodiscard]] pid_t handler_pid() const { return handler_pid_; }
  // What becomes ready (`events`, for epoll) once the handler has exited: its pidfd; without
  // one, the connection, which hangs up when the handler's last reference to it goes. So a
  // handler the VMM cannot see any other way must keep the connection open while it serves,
  // as Firecracker's example handlers do. Borrowed; for the VMM loop (Vmm::WatchUffdHandler).
  struct ExitWatch {
    int fd;
    std::uint32_t events;
  };
  [[nodiscard]] ExitWatch exit_watch() const;
  [[nodiscard]] const std::string& socket_path() const { return socket_path_; }

 private:
  UffdHandoff() = default;

  std::string socket_path_;
  base::UniqueFd uffd_;
  // Kept open: closing it tells nothing a handler needs to know; without a pidfd its hang-up
  // is how the handler's exit shows.
  base::UniqueFd socket_;
  base::UniqueFd pidfd_;
  pid_t handler_pid_ = 0;
};

}  // namespace ember::vmm
