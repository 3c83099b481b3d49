#pragma once

// emberctl fn ...: the Functions API (deploy, invoke, list, update, delete).
#include "vmm/emberctl/client.h"

namespace ember::ctl {

inline constexpr char kFnHelp[] =
    "  fn deploy NAME (--image EXT4 | --oci ARCHIVE) --mem MIB [--vcpus N] [--kernel PATH]\n"
    "            [--boot-args ARGS] [--handler 'CMD ARGS'] [--warmup-file FILE] [--network]\n"
    "            [--min-warm N] [--max-concurrency N] [--keep-warm-ms MS] [--idle-to-zero-ms MS]\n"
    "                                                   boot, warm up and snapshot a function\n"
    "                                                   (--oci: ember-rootfs builds its image\n"
    "                                                   beside the archive first)\n"
    "  fn invoke NAME [--payload-file FILE] [--timeout-ms MS] [--stream]\n"
    "                                                   payload from FILE or stdin, result to\n"
    "                                                   stdout (--json: the response and its\n"
    "                                                   timings as JSON)\n"
    "  fn list [NAME] | fn delete NAME [--force]\n"
    "  fn update NAME [--min-warm N] [--max-concurrency N] [--keep-warm-ms MS]\n"
    "            [--idle-to-zero-ms MS]                 replace the pool settings\n";

int Fn(Client& client, const Args& args);

}  // namespace ember::ctl
