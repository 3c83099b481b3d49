#pragma once

#include <string>
#include <string_view>

namespace ember::control {

// Where ember-vmm reports why it could not build its VM (proto BuildFailure): the listening
// control socket a controller waits on (--control-fd, -1 for none) and the --exit-record file
// ("" for none). Called by ember-vmm's main once its flags are parsed; until then a failure
// goes to stderr only.
void SetBuildFailureSinks(int control_listen_fd, std::string exit_record_path);

// Tells the controller (a BUILD_FAILED event on its waiting connection, if one comes within a
// second) and the exit record ("EXIT_CODE MESSAGE") why the VM could not be built, just before
// ember-vmm exits with `exit_code`. Best effort: a sink that fails is skipped. Main thread only,
// before the VMM's threads exist.
void ReportBuildFailure(int exit_code, std::string_view message);

}  // namespace ember::control
