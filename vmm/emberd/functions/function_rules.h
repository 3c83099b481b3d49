#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "ember/v1/api.pb.h"

namespace ember::emberd::functions {

// The Functions API's limits (api.proto), in one place for the checks and the defaults.
inline constexpr std::size_t kMaxNameLength = 32;
inline constexpr std::size_t kMaxPayloadBytes = 1'048'000;  // an agent frame less its envelope
inline constexpr std::uint32_t kMaxMinWarm = 64;
inline constexpr std::uint32_t kMaxConcurrency = 256;
inline constexpr std::uint32_t kDefaultConcurrency = 16;
inline constexpr std::uint32_t kMaxKeepWarmMs = 3'600'000;
inline constexpr std::uint32_t kMaxIdleToZeroMs = 86'400'000;
inline constexpr std::uint32_t kDefaultInvokeTimeoutMs = 30'000;
inline constexpr std::uint32_t kMaxInvokeTimeoutMs = 900'000;
inline constexpr std::uint32_t kDefaultReadyTimeoutMs = 120'000;
inline constexpr int kMaxWarmups = 16;
// A function with network on: its deploy VM's (and so every clone's) tap and guest MAC.
inline constexpr char kFunctionTap[] = "tap0";
inline constexpr char kFunctionGuestMac[] = "06:00:ac:10:00:02";

// Each returns INVALID_ARGUMENT naming the field. Called by the gRPC service before anything
// else; pure.
[[nodiscard]] absl::Status ValidateName(const std::string& field, const std::string& name);
[[nodiscard]] absl::Status ValidatePool(const std::string& field, const v1::FunctionPool& pool);
// The request's own fields; the host paths are checked against emberd's rules by the caller.
[[nodiscard]] absl::Status ValidateDeploy(const v1::DeployFunctionRequest& request);
[[nodiscard]] absl::Status ValidateInvoke(const v1::FunctionInvokeRequest& request);

// The defaults api.proto names, filled in.
[[nodiscard]] std::uint32_t Concurrency(const v1::FunctionPool& pool);
[[nodiscard]] std::uint32_t InvokeTimeoutMs(const v1::FunctionInvokeRequest& request);

// The VM configuration of a function's deploy VM: `image` attached read-only as its root
// drive, its agent reached at `vsock_uds_path`, with network on one interface on kFunctionTap.
[[nodiscard]] v1::VmConfig DeployConfig(const v1::DeployFunctionRequest& request,
                                        const std::string& image,
                                        const std::string& vsock_uds_path);

}  // namespace ember::emberd::functions
