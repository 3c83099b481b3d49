#pragma once

#include <memory>
#include <string>

#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"

namespace ember::emberd {

// The PEM files behind emberd --tcp: emberd's certificate and key, and the CA that signs the
// certificates of the clients it admits.
struct TlsFiles {
  std::string cert;
  std::string key;
  std::string client_ca;
};

// gRPC's own TLS credentials for the TCP listener, with mutual TLS: a client must present a
// certificate that `files.client_ca` signed, or the handshake fails before any call is read.
// Reads the files now (at start-up, before emberd's seccomp filter); INVALID_ARGUMENT naming
// the flag of a file that cannot be read or holds no PEM block. gRPC checks the PEM itself when
// the server starts.
[[nodiscard]] absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MutualTlsCredentials(
    const TlsFiles& files);

}  // namespace ember::emberd
