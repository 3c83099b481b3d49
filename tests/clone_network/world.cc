#include "tests/clone_network/world.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "tests/support/files.h"
#include "tests/support/netns.h"
#include "vmm/emberd/clone_network/netns.h"

namespace ember::testing {
namespace {

std::vector<std::string> Split(const std::string& args) {
  std::vector<std::string> parts;
  std::istringstream in(args);
  for (std::string part; in >> part;) parts.push_back(part);
  return parts;
}

std::string Tool(const std::string& name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    if (::access((dir + name).c_str(), X_OK) == 0) return dir + name;
  }
  return name;
}

// "net:[4026532000]" -> 4026532000; 0 for anything else.
ino_t NetnsLinkInode(const std::string& link) {
  if (link.rfind("net:[", 0) != 0 || link.back() != ']') return 0;
  return static_cast<ino_t>(std::stoull(link.substr(5, link.size() - 6)));
}

std::string ReadLink(const std::string& path) {
  char buf[256];
  ssize_t n = ::readlink(path.c_str(), buf, sizeof(buf));
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
}

std::vector<std::string> DirEntries(const std::string& path) {
  std::vector<std::string> names;
  std::error_code error;
  for (auto it = std::filesystem::directory_iterator(path, error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    names.push_back(it->path().filename());
  }
  return names;
}

// The namespaces the process `pid` holds through its threads and its fds.
void AddHeldBy(const std::string& pid, std::set<ino_t>* inodes) {
  for (const std::string& tid : DirEntries("/proc/" + pid + "/task")) {
    if (ino_t ino = NetnsLinkInode(ReadLink("/proc/" + pid + "/task/" + tid + "/ns/net"))) {
      inodes->insert(ino);
    }
  }
  for (const std::string& fd : DirEntries("/proc/" + pid + "/fd")) {
    if (ino_t ino = NetnsLinkInode(ReadLink("/proc/" + pid + "/fd/" + fd))) inodes->insert(ino);
  }
}

// nsfs mounts of this process's mount namespace: mount point -> the namespace's inode.
std::vector<std::pair<std::string, ino_t>> NsfsMounts() {
  std::vector<std::pair<std::string, ino_t>> mounts;
  std::istringstream lines(ReadFile("/proc/self/mountinfo"));
  for (std::string line; std::getline(lines, line);) {
    // id parent major:minor root mount-point options ... - fstype source super-options
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    if (line.find(" - nsfs ") == std::string::npos) continue;
    if (ino_t ino = NetnsLinkInode(root)) mounts.emplace_back(point, ino);
  }
  return mounts;
}

}  // namespace

std::string EnterTestHost() {
  static const std::string reason = []() -> std::string {
    if (std::string why = EnterPrivateNetns(); !why.empty()) return why;
    if (::unshare(CLONE_NEWNS) != 0)
      return std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno);
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      return std::string("mount --make-rprivate /: ") + std::strerror(errno);
    }
    if (Ip("link set lo up").exit_code != 0) return "ip link set lo up failed";
    base::UniqueFd forward(::open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC));
    if (!forward || ::write(forward.Get(), "1", 1) != 1) return "cannot turn on ip_forward";
    return "";
  }();
  return reason;
}

ProcessResult Ip(const std::string& args) {
  std::vector<std::string> argv = Split(args);
  argv.insert(argv.begin(), Tool("ip"));
  return RunProcess(argv, std::chrono::seconds(10));
}

ProcessResult IpIn(int netns_fd, const std::string& args) {
  absl::StatusOr<emberd::ScopedNetns> inside = emberd::ScopedNetns::Enter(netns_fd);
  if (!inside.ok()) {
    ADD_FAILURE() << inside.status();
    return {};
  }
  return Ip(args);  // the child is forked inside
}

std::set<std::string> LinkNames(int netns_fd) {
  ProcessResult r = netns_fd >= 0 ? IpIn(netns_fd, "-o link show") : Ip("-o link show");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::set<std::string> names;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    // "2: name@peer: <FLAGS> ..."
    std::size_t start = line.find(": ");
    std::size_t end = line.find(':', start + 2);
    if (start == std::string::npos || end == std::string::npos) continue;
    std::string name = line.substr(start + 2, end - start - 2);
    names.insert(name.substr(0, name.find('@')));
  }
  return names;
}

HostState ReadHostState() {
  HostState state;
  state.links = LinkNames();
  ProcessResult nft = RunProcess({Tool("nft"), "list", "ruleset"}, std::chrono::seconds(10));
  EXPECT_EQ(nft.exit_code, 0) << nft.err;
  state.nft_ruleset = nft.out;
  for (const auto& [point, ino] : NsfsMounts()) {
    state.nsfs_mounts.insert(point);
    state.reachable_netns.insert(ino);
  }
  AddHeldBy("self", &state.reachable_netns);
  return state;
}

std::string Describe(const HostState& state) {
  std::ostringstream out;
  out << "links:";
  for (const auto& link : state.links) out << " " << link;
  out << "\nnsfs mounts:";
  for (const auto& mount : state.nsfs_mounts) out << " " << mount;
  out << "\nnetns reachable:";
  for (ino_t ino : state.reachable_netns) out << " " << ino;
  out << "\nnft ruleset:\n" << state.nft_ruleset;
  return out.str();
}

ino_t NetnsInode(int netns_fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(netns_fd, &st), 0) << std::strerror(errno);
  return st.st_ino;
}

bool NetnsHeldAnywhere(ino_t inode) {
  std::set<ino_t> held;
  for (const std::string& pid : DirEntries("/proc")) {
    if (pid.find_first_not_of("0123456789") == std::string::npos) AddHeldBy(pid, &held);
  }
  for (const auto& [point, ino] : NsfsMounts()) held.insert(ino);
  return held.count(inode) != 0;
}

RoutedNamespace::RoutedNamespace(std::string link, std::string gateway, std::string address,
                                 int prefix)
    : link_(std::move(link)), gateway_(std::move(gateway)), address_(std::move(address)) {
  Build(prefix);
}

void RoutedNamespace::Build(int prefix) {
  absl::StatusOr<base::UniqueFd> ns = emberd::NewNetns();
  if (!ns.ok()) {
    ADD_FAILURE() << ns.status();
    return;
  }
  netns_ = std::move(*ns);
  absl::StatusOr<base::UniqueFd> host = emberd::CurrentNetns();
  ASSERT_TRUE(host.ok()) << host.status();
  // Made inside the new namespace, the host end moved out by the host namespace's fd.
  const std::string host_ns =
      "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(host->Get());
  const std::string length = "/" + std::to_string(prefix);
  for (const std::string& args :
       {"link add eth0 type veth peer name " + link_ + " netns " + host_ns,
        "addr add " + address_ + length + " dev eth0", std::string("link set eth0 up"),
        std::string("link set lo up")}) {
    ProcessResult r = IpIn(netns_.Get(), args);
    ASSERT_EQ(r.exit_code, 0) << "ip " << args << ": " << r.err;
  }
  for (const std::string& args :
       {"addr add " + gateway_ + length + " dev " + link_, "link set " + link_ + " up"}) {
    ProcessResult r = Ip(args);
    ASSERT_EQ(r.exit_code, 0) << "ip " << args << ": " << r.err;
  }
}

RoutedNamespace::~RoutedNamespace() {
  if (LinkNames().count(link_) != 0) {
    EXPECT_EQ(Ip("link del " + link_).exit_code, 0);
  }
}

base::UniqueFd SocketIn(int netns_fd, int type, int family) {
  absl::StatusOr<emberd::ScopedNetns> inside = emberd::ScopedNetns::Enter(netns_fd);
  if (!inside.ok()) {
    ADD_FAILURE() << inside.status();
    return base::UniqueFd();
  }
  base::UniqueFd fd(::socket(family, type | SOCK_CLOEXEC, 0));
  EXPECT_TRUE(fd) << std::strerror(errno);
  return fd;
}

}  // namespace ember::testing
