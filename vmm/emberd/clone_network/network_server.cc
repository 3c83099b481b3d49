#include "vmm/emberd/clone_network/network_server.h"

#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "vmm/base/helper_process.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/emberd/clone_network/clone_network.h"
#include "vmm/emberd/clone_network/nft.h"
#include "vmm/emberd/clone_network/rtnetlink.h"

namespace ember::emberd {
namespace {

// Requests are NUL-separated fields: "prepare", tap name, tap address ("" for none), "0" or
// "1" (egress); or "release", id. A reply is a status code (int32) and its message, or on
// success the answer: "id\0path" for prepare, "" for release. The helper's first message,
// once its clean-up is done, is a reply too.
constexpr char kPrepare[] = "prepare";
constexpr char kRelease[] = "release";
constexpr std::size_t kMaxMessage = 4096;

std::vector<std::string> Fields(std::string_view bytes) {
  std::vector<std::string> fields;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= bytes.size(); ++i) {
    if (i == bytes.size() || bytes[i] == '\0') {
      fields.emplace_back(bytes.substr(start, i - start));
      start = i + 1;
    }
  }
  return fields;
}

std::string Encode(const absl::Status& status, const std::string& answer = "") {
  const auto code = static_cast<std::int32_t>(status.code());
  std::string reply(reinterpret_cast<const char*>(&code), sizeof(code));  // bytes of an int32
  reply += status.ok() ? answer : std::string(status.message());
  return reply;
}

bool IsNumber(std::string_view text) {
  return !text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos;
}

int ThreadsOfThisProcess() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

// The helper's side: the networks it holds and makes.
class Helper {
 public:
  Helper(CloneNetworkServerConfig config, std::unique_ptr<EgressPool> pool)
      : config_(std::move(config)), pool_(std::move(pool)) {}

  // Removes what an earlier helper of the same configuration left behind.
  absl::Status Sweep() {
    std::error_code error;
    std::filesystem::create_directories(config_.netns_dir, error);
    if (error) return absl::InternalError("mkdir " + config_.netns_dir + ": " + error.message());
    for (const auto& entry : std::filesystem::directory_iterator(config_.netns_dir, error)) {
      EMBER_RETURN_IF_ERROR(UnnameNetns(entry.path()));
    }
    if (error) return absl::InternalError("list " + config_.netns_dir + ": " + error.message());
    if (!config_.egress) return absl::OkStatus();
    const std::string& prefix = config_.egress->veth_prefix;
    EMBER_ASSIGN_OR_RETURN(RtNetlink host, RtNetlink::Open());
    if (struct if_nameindex* links = ::if_nameindex(); links != nullptr) {
      std::vector<std::string> names;
      for (struct if_nameindex* each = links; each->if_index != 0; ++each) {
        names.push_back(each->if_name);
      }
      ::if_freenameindex(links);
      for (const std::string& name : names) {
        if (name.rfind(prefix, 0) == 0 && IsNumber(name.substr(prefix.size()))) {
          absl::Status deleted = host.DeleteLink(name);
          if (!deleted.ok() && !absl::IsNotFound(deleted)) return deleted;
        }
      }
    }
    EMBER_ASSIGN_OR_RETURN(std::string tables, RunNft("list tables ip"));
    const std::string table_prefix = EgressTableName(prefix);
    std::istringstream lines(tables);
    for (std::string line; std::getline(lines, line);) {
      const std::string head = "table ip ";
      if (line.rfind(head, 0) != 0) continue;
      const std::string table = line.substr(head.size());
      if (table.rfind(table_prefix, 0) == 0 && IsNumber(table.substr(table_prefix.size()))) {
        EMBER_RETURN_IF_ERROR(RunNft("delete table ip " + table).status());
      }
    }
    return absl::OkStatus();
  }

  std::string Handle(const std::vector<std::string>& fields) {
    if (fields.size() == 4 && fields[0] == kPrepare && (fields[3] == "0" || fields[3] == "1")) {
      CloneNetworkShape shape{fields[1], std::nullopt, fields[3] == "1"};
      if (!fields[2].empty()) {
        absl::StatusOr<Ipv4Cidr> address = Ipv4Cidr::Parse(fields[2]);
        if (!address.ok()) return Encode(address.status());
        shape.tap_address = *address;
      }
      absl::StatusOr<std::string> id = Take(shape);
      if (!id.ok()) return Encode(id.status());
      return Encode(absl::OkStatus(), *id + '\0' + Path(*id));
    }
    if (fields.size() == 2 && fields[0] == kRelease) {
      auto it = held_.find(fields[1]);
      if (it == held_.end()) {
        return Encode(absl::NotFoundError("no clone network \"" + fields[1] + "\""));
      }
      absl::Status status = it->second.Teardown();
      if (status.ok()) held_.erase(it);
      return Encode(status);
    }
    return Encode(absl::InvalidArgumentError("malformed clone network request"));
  }

  // Makes the spares that requests took, between requests.
  void Refill() {
    for (auto& [key, shape] : shapes_) {
      std::deque<std::string>& ready = spares_[key];
      while (ready.size() < config_.spares) {
        absl::StatusOr<std::string> id = Make(shape);
        if (!id.ok()) {
          EMBER_LOG(kWarn) << "clone network server: spare network not made: " << id.status();
          break;
        }
        ready.push_back(*id);
      }
    }
  }

 private:
  static std::string Key(const CloneNetworkShape& shape) {
    return shape.tap_name + '\0' + (shape.tap_address ? shape.tap_address->ToString() : "") + '\0' +
           (shape.egress ? "1" : "0");
  }
  std::string Path(const std::string& id) const { return config_.netns_dir + "/" + id; }

  absl::StatusOr<std::string> Take(const CloneNetworkShape& shape) {
    const std::string key = Key(shape);
    std::deque<std::string>& ready = spares_[key];
    if (!ready.empty()) {
      std::string id = std::move(ready.front());
      ready.pop_front();
      return id;
    }
    EMBER_ASSIGN_OR_RETURN(std::string id, Make(shape));
    shapes_.emplace(key, shape);  // a shape that could be made gets spares from now on
    return id;
  }

  absl::StatusOr<std::string> Make(const CloneNetworkShape& shape) {
    CloneNetworkSpec spec;
    spec.tap_name = shape.tap_name;
    spec.tap_address = shape.tap_address;
    if (shape.egress) {
      if (pool_ == nullptr) {
        return absl::FailedPreconditionError(
            "egress: this emberd has no address pool for clones' egress");
      }
      EMBER_ASSIGN_OR_RETURN(EgressLease lease, pool_->Acquire());
      spec.egress.emplace(std::move(lease));
    }
    std::string id = "n" + std::to_string(next_id_++);
    spec.mount_path = Path(id);
    EMBER_ASSIGN_OR_RETURN(CloneNetwork network, CloneNetwork::Prepare(std::move(spec)));
    held_.emplace(id, std::move(network));
    return id;
  }

  const CloneNetworkServerConfig config_;
  std::unique_ptr<EgressPool> pool_;
  std::map<std::string, CloneNetwork> held_;               // by id, spares included
  std::map<std::string, CloneNetworkShape> shapes_;        // every shape asked for, by Key
  std::map<std::string, std::deque<std::string>> spares_;  // ids made ahead, by Key
  std::uint64_t next_id_ = 0;
};

[[noreturn]] void Serve(base::UniqueFd socket, CloneNetworkServerConfig config) {
  auto send = [&](const std::string& reply) {
    if (::send(socket.Get(), reply.data(), reply.size(), MSG_NOSIGNAL) < 0) ::_exit(0);
  };
  std::unique_ptr<EgressPool> pool;
  if (config.egress) {
    absl::StatusOr<std::unique_ptr<EgressPool>> made = EgressPool::Create(*config.egress);
    if (!made.ok()) {
      send(Encode(made.status()));
      ::_exit(1);
    }
    pool = std::move(*made);
  }
  auto helper = std::make_unique<Helper>(std::move(config), std::move(pool));
  absl::Status swept = helper->Sweep();
  send(Encode(swept));
  if (!swept.ok()) ::_exit(1);
  std::vector<char> buffer(kMaxMessage);
  while (true) {
    ssize_t n = ::recv(socket.Get(), buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // emberd closed its end (or is gone)
    send(helper->Handle(Fields(std::string_view(buffer.data(), static_cast<std::size_t>(n)))));
    helper->Refill();
  }
  helper.reset();  // every network torn down
  ::_exit(0);
}

absl::Status Decode(const std::string& reply, std::string* answer) {
  std::int32_t code = 0;
  if (reply.size() < sizeof(code)) return absl::InternalError("short clone network reply");
  std::memcpy(&code, reply.data(), sizeof(code));
  std::string text = reply.substr(sizeof(code));
  if (code == 0) {
    *answer = std::move(text);
    return absl::OkStatus();
  }
  return absl::Status(static_cast<absl::StatusCode>(code), text);
}

absl::StatusOr<std::string> ReadReply(int socket) {
  std::string reply(kMaxMessage, '\0');
  ssize_t n;
  do {
    n = ::recv(socket, reply.data(), reply.size(), 0);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) {
    return absl::UnavailableError("emberd's clone network server did not answer" +
                                  (n < 0 ? std::string(": ") + std::strerror(errno) : ""));
  }
  reply.resize(static_cast<std::size_t>(n));
  std::string answer;
  EMBER_RETURN_IF_ERROR(Decode(reply, &answer));
  return answer;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CloneNetworkServer>> CloneNetworkServer::Start(
    CloneNetworkServerConfig config) {
  if (int threads = ThreadsOfThisProcess(); threads != 1) {
    return absl::FailedPreconditionError(
        "the clone network server must start while emberd has one thread; it has " +
        std::to_string(threads));
  }
  if (config.netns_dir.empty() || config.netns_dir[0] != '/') {
    return absl::InvalidArgumentError("clone network directory \"" + config.netns_dir +
                                      "\" is not absolute");
  }
  // It holds nothing of emberd's, e.g. the state directory's lock, which would outlive emberd
  // there for a moment and turn its successor away. Named apart from emberd and its fork server.
  EMBER_ASSIGN_OR_RETURN(base::HelperProcess helper,
                         base::ForkHelperProcess("clone network server", "emberd-netns",
                                                 [&](base::UniqueFd socket) {
                                                   Serve(std::move(socket), std::move(config));
                                                 }));
  std::unique_ptr<CloneNetworkServer> server(
      new CloneNetworkServer(std::move(helper.socket), helper.pid));
  absl::StatusOr<std::string> ready = ReadReply(server->socket_.Get());
  if (!ready.ok()) {
    return absl::Status(ready.status().code(),
                        "clone network server: " + std::string(ready.status().message()));
  }
  return server;
}

CloneNetworkServer::~CloneNetworkServer() {
  // The helper tears everything down once it reads the end of requests, then exits, which
  // closes its end: waiting for that means nothing is left when this returns.
  ::shutdown(socket_.Get(), SHUT_WR);
  char byte;
  ssize_t n;
  do {
    n = ::recv(socket_.Get(), &byte, 1, 0);
  } while (n > 0 || (n < 0 && errno == EINTR));
}

absl::StatusOr<std::string> CloneNetworkServer::Call(const std::string& request) {
  std::lock_guard lock(mu_);
  if (::send(socket_.Get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    return base::ErrnoError("send",
                            "clone network server (pid " + std::to_string(helper_pid_) + ")");
  }
  return ReadReply(socket_.Get());
}

absl::StatusOr<PreparedNetwork> CloneNetworkServer::Prepare(const CloneNetworkShape& shape) {
  if (shape.tap_name.find('\0') != std::string::npos || shape.tap_name.size() > 64) {
    return absl::InvalidArgumentError("tap name is not a link name");
  }
  std::string request = std::string(kPrepare) + '\0' + shape.tap_name + '\0' +
                        (shape.tap_address ? shape.tap_address->ToString() : "") + '\0' +
                        (shape.egress ? "1" : "0");
  EMBER_ASSIGN_OR_RETURN(std::string answer, Call(request));
  const std::size_t nul = answer.find('\0');
  if (nul == std::string::npos) return absl::InternalError("malformed clone network reply");
  return PreparedNetwork{answer.substr(0, nul), answer.substr(nul + 1)};
}

absl::Status CloneNetworkServer::Release(const std::string& id) {
  if (id.empty() || id.size() > 64 || id.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("\"" + id + "\" is not a clone network id");
  }
  return Call(std::string(kRelease) + '\0' + id).status();
}

}  // namespace ember::emberd
