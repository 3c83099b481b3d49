#pragma once

#include "ember/v1/api.grpc.pb.h"
#include "vmm/base/path_rules.h"
#include "vmm/emberd/functions/function_manager.h"

namespace ember::emberd::functions {

// The gRPC face of the Functions API (api.proto): checks each request (INVALID_ARGUMENT naming
// the field) and hands it to the FunctionManager. Called on gRPC's threads; `manager` and
// `paths` (emberd --allow-dir) outlive it.
class FunctionsService final : public v1::Functions::Service {
 public:
  FunctionsService(FunctionManager& manager, const base::PathRules& paths)
      : manager_(manager), paths_(paths) {}

  grpc::Status DeployFunction(grpc::ServerContext*, const v1::DeployFunctionRequest*,
                              v1::Function*) override;
  grpc::Status Invoke(grpc::ServerContext*, const v1::FunctionInvokeRequest*,
                      v1::FunctionInvokeResponse*) override;
  grpc::Status InvokeStream(grpc::ServerContext*, const v1::FunctionInvokeRequest*,
                            grpc::ServerWriter<v1::FunctionInvokeChunk>*) override;
  grpc::Status ListFunctions(grpc::ServerContext*, const v1::ListFunctionsRequest*,
                             v1::ListFunctionsResponse*) override;
  grpc::Status UpdateFunction(grpc::ServerContext*, const v1::UpdateFunctionRequest*,
                              v1::Function*) override;
  grpc::Status DeleteFunction(grpc::ServerContext*, const v1::DeleteFunctionRequest*,
                              v1::DeleteFunctionResponse*) override;

 private:
  FunctionManager& manager_;
  const base::PathRules& paths_;
};

}  // namespace ember::emberd::functions
