#include "vmm/emberd/store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <vector>

#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>

#include "vmm/base/atomic_file.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::emberd {

absl::Status WriteFileAtomic(const std::string& path, const std::string& contents, int mode) {
  return base::WriteFileAtomically(path, contents, static_cast<mode_t>(mode));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return base::ErrnoError("open", path);
  std::string contents;
  char buf[8192];
  while (true) {
    ssize_t n = ::read(fd.Get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return base::ErrnoError("read", path);
    if (n == 0) break;
    contents.append(buf, static_cast<std::size_t>(n));
  }
  return contents;
}

absl::Status WriteMessageJson(const std::string& path, const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.add_whitespace = true;
  if (auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
      !status.ok()) {
    return absl::InternalError("cannot encode " + path + " as JSON: " +
                               std::string(status.message()));
  }
  return WriteFileAtomic(path, json);
}

absl::Status ReadMessageJson(const std::string& path, google::protobuf::Message* message) {
  EMBER_ASSIGN_OR_RETURN(std::string json, ReadFile(path));
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;  // records written by a newer emberd
  if (auto status = google::protobuf::util::JsonStringToMessage(json, message, options);
      !status.ok()) {
    return absl::DataLossError(path + ": " + std::string(status.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ToUserJson(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  if (auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
      !status.ok()) {
    return absl::InternalError("cannot encode the VM config as JSON: " +
                               std::string(status.message()));
  }
  return json;
}

absl::Status RemoveTree(const std::string& path) {
  std::error_code error;
  std::filesystem::remove_all(path, error);
  if (error) return absl::InternalError("cannot remove " + path + ": " + error.message());
  return absl::OkStatus();
}

int CopySparse(int in, int out) {
  struct stat st {};
  if (::fstat(in, &st) != 0) return errno;
  std::vector<char> buffer(1 << 16);
  off_t offset = 0;
  while (offset < st.st_size) {
    off_t data = ::lseek(in, offset, SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // only a hole is left: ftruncate makes it
    if (data < 0) return errno;
    off_t hole = ::lseek(in, data, SEEK_HOLE);
    if (hole < 0) return errno;
    if (::lseek(in, data, SEEK_SET) < 0 || ::lseek(out, data, SEEK_SET) < 0) return errno;
    for (off_t pos = data; pos < hole;) {
      std::size_t want = std::min(buffer.size(), static_cast<std::size_t>(hole - pos));
      ssize_t n = ::read(in, buffer.data(), want);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno;
      if (n == 0) return EIO;  // the file shrank under us: the copy would not be it
      for (ssize_t done = 0; done < n;) {
        ssize_t w = ::write(out, buffer.data() + done, static_cast<std::size_t>(n - done));
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return errno;
        done += w;
      }
      pos += n;
    }
    offset = hole;
  }
  return ::ftruncate(out, st.st_size) == 0 ? 0 : errno;
}

}  // namespace ember::emberd
