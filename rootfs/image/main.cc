// ember-rootfs: builds an Ember guest's ext4 root image (see options.h for the command line).
#include <cstdio>
#include <cstring>
#include <string>

#include "rootfs/image/build.h"
#include "rootfs/image/interrupt.h"
#include "rootfs/image/options.h"

namespace {

constexpr int kExitError = 1;
constexpr int kExitBadInput = 2;

// The user's input was wrong (exit 2), or the host failed us (exit 1).
int ExitCodeOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kPermissionDenied:
      return kExitBadInput;
    default:
      return kExitError;
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::StatusOr<ember::rootfs::Options> options = ember::rootfs::ParseOptions(argc, argv);
  if (!options.ok()) {
    std::fprintf(stderr, "ember-rootfs: %s\n", std::string(options.status().message()).c_str());
    return kExitBadInput;
  }
  if (options->help) {
    std::fputs(ember::rootfs::kUsage, stdout);
    return 0;
  }
  ember::rootfs::InstallInterruptHandlers();
  absl::Status status = ember::rootfs::BuildRootfs(*options);
  // A signal after the image was committed changes nothing: the build is done.
  if (int signal = ember::rootfs::InterruptSignal(); signal != 0 && !status.ok()) {
    std::fprintf(stderr, "ember-rootfs: interrupted by %s; nothing written\n",
                 sigabbrev_np(signal));
    return 128 + signal;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "ember-rootfs: %s\n", std::string(status.message()).c_str());
    return ExitCodeOf(status);
  }
  return 0;
}
