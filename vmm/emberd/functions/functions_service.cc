#include "vmm/emberd/functions/functions_service.h"

#include <algorithm>

#include "vmm/base/clock.h"
#include "vmm/emberd/functions/function_rules.h"

namespace ember::emberd::functions {
namespace {

constexpr std::size_t kChunkBytes = 64 * 1024;

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace

grpc::Status FunctionsService::DeployFunction(grpc::ServerContext*,
                                              const v1::DeployFunctionRequest* request,
                                              v1::Function* response) {
  if (auto s = ValidateDeploy(*request); !s.ok()) return ToGrpc(s);
  // Checked here for a clear answer at once; the image is opened by these rules again when
  // it is copied, and the kernel when the VM is built.
  if (auto s = paths_.Check("kernel_image_path", request->kernel_image_path()); !s.ok()) {
    return ToGrpc(s);
  }
  if (auto s = paths_.OpenFile("root_image_path", request->root_image_path());
      !request->root_image_path().empty() && !s.ok()) {
    return ToGrpc(s.status());
  }
  if (auto s = paths_.OpenFile("oci_archive_path", request->oci_archive_path());
      !request->oci_archive_path().empty() && !s.ok()) {
    return ToGrpc(s.status());
  }
  absl::StatusOr<v1::Function> function = manager_.Deploy(*request);
  if (!function.ok()) return ToGrpc(function.status());
  *response = std::move(*function);
  return grpc::Status::OK;
}

grpc::Status FunctionsService::Invoke(grpc::ServerContext*,
                                      const v1::FunctionInvokeRequest* request,
                                      v1::FunctionInvokeResponse* response) {
  const std::uint64_t arrival = base::MonotonicMicros();
  if (auto s = ValidateInvoke(*request); !s.ok()) return ToGrpc(s);
  absl::StatusOr<InvokeResult> result = manager_.Invoke(*request, arrival);
  if (!result.ok()) return ToGrpc(result.status());
  response->set_output(std::move(result->output));
  *response->mutable_timings() = result->timings;
  response->set_vm_id(result->vm_id);
  return grpc::Status::OK;
}

grpc::Status FunctionsService::InvokeStream(grpc::ServerContext*,
                                            const v1::FunctionInvokeRequest* request,
                                            grpc::ServerWriter<v1::FunctionInvokeChunk>* writer) {
  const std::uint64_t arrival = base::MonotonicMicros();
  if (auto s = ValidateInvoke(*request); !s.ok()) return ToGrpc(s);
  absl::StatusOr<InvokeResult> result = manager_.Invoke(*request, arrival);
  if (!result.ok()) return ToGrpc(result.status());
  const std::string& output = result->output;
  std::size_t offset = 0;
  do {
    v1::FunctionInvokeChunk chunk;
    const std::size_t size = std::min(kChunkBytes, output.size() - offset);
    chunk.set_output(output.substr(offset, size));
    offset += size;
    if (offset == output.size()) {
      chunk.set_last(true);
      *chunk.mutable_timings() = result->timings;
      chunk.set_vm_id(result->vm_id);
    }
    if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "client left");
  } while (offset < output.size());
  return grpc::Status::OK;
}

grpc::Status FunctionsService::ListFunctions(grpc::ServerContext*,
                                             const v1::ListFunctionsRequest* request,
                                             v1::ListFunctionsResponse* response) {
  if (!request->name().empty()) {
    if (auto s = ValidateName("name", request->name()); !s.ok()) return ToGrpc(s);
  }
  for (v1::Function& function : manager_.List(request->name())) {
    *response->add_functions() = std::move(function);
  }
  return grpc::Status::OK;
}

grpc::Status FunctionsService::UpdateFunction(grpc::ServerContext*,
                                              const v1::UpdateFunctionRequest* request,
                                              v1::Function* response) {
  if (auto s = ValidateName("name", request->name()); !s.ok()) return ToGrpc(s);
  if (auto s = ValidatePool("pool", request->pool()); !s.ok()) return ToGrpc(s);
  absl::StatusOr<v1::Function> function = manager_.Update(*request);
  if (!function.ok()) return ToGrpc(function.status());
  *response = std::move(*function);
  return grpc::Status::OK;
}

grpc::Status FunctionsService::DeleteFunction(grpc::ServerContext*,
                                              const v1::DeleteFunctionRequest* request,
                                              v1::DeleteFunctionResponse*) {
  if (auto s = ValidateName("name", request->name()); !s.ok()) return ToGrpc(s);
  return ToGrpc(manager_.Delete(request->name(), request->force()));
}

}  // namespace ember::emberd::functions
