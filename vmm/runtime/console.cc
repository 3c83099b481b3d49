#include "console.h"

#include <fcntl.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>


#include "vmm/base/fd_passing.h"
#include "vmm/base/status.h"
#include "vmm/base/unix_address.h"

namespace ember::runtime {
namespace {

// Sends the pty master over the console socket the caller named (runc's protocol: one
// message, the terminal's name as data, the fd as SCM_RIGHTS).
absl::Status SendConsole(const std::string& socket_path, int master, const std::string& name) {
  EMBER_ASSIGN_OR_RETURN(sockaddr_un addr, base::UnixAddress(socket_path));
  base::UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock) return base::ErrnoError("socket", socket_path);
  if (::connect(sock.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return base::ErrnoError("connect", "console socket " + socket_path);
  }
  const int fds[] = {master};
  absl::StatusOr<std::size_t> sent = base::SendWithFds(sock.Get(), name, fds);
  if (!sent.ok()) return base::ErrnoError("sendmsg", "console socket " + socket_path);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<base::UniqueFd> OpenConsole(const std::string& socket_path, std::uint32_t rows,
                                           std::uint32_t cols) {
  int master = -1, slave = -1;
  winsize size{};
  size.ws_row = static_cast<unsigned short>(rows);
  size.ws_col = static_cast<unsigned short>(cols);
  if (::openpty(&master, &slave, nullptr, nullptr, rows != 0 ? &size : nullptr) != 0) {
    return base::ErrnoError("openpty", "the container's console");
  }
  base::UniqueFd master_fd(master), slave_fd(slave);
  ::fcntl(slave, F_SETFD, FD_CLOEXEC);
  termios raw{};
  if (::tcgetattr(slave, &raw) == 0) {
    ::cfmakeraw(&raw);
    ::tcsetattr(slave, TCSANOW, &raw);
  }
  ::ioctl(slave, TIOCSCTTY, 0);
  char name[64] = "/dev/ptmx";
  ::ptsname_r(master, name, sizeof(name));
  EMBER_RETURN_IF_ERROR(SendConsole(socket_path, master, name));
  return slave_fd;
}

}  // namespace ember::runtime
