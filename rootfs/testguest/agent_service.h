/* The agent protocol (proto/ember/v1/agent.proto) as the test guest speaks it: one request
 * frame in, its response frames out. The transport (agent_scenario.c) owns the connections;
 * this file only decodes AgentRequest and encodes AgentResponse. */
#pragma once

#include <stdint.h>

/* The largest request frame payload the guest takes: its vsock receive window
 * (VSOCK_BUF_ALLOC) less the 4-byte length. A longer frame gets RESOURCE_EXHAUSTED. */
#define AGENT_MAX_REQUEST 4092
/* Room for any response frame: outputs are at most as long as the request. */
#define AGENT_MAX_FRAME (AGENT_MAX_REQUEST + 128)

/* Status codes in Error.code (google.rpc / absl numbering). */
#define AGENT_INVALID_ARGUMENT 3
#define AGENT_NOT_FOUND 5
#define AGENT_RESOURCE_EXHAUSTED 8
#define AGENT_UNIMPLEMENTED 12

struct agent_state {
  uint64_t boot_id;   /* kept by a restored clone until its PostRestore */
  uint64_t start_tsc; /* for ReadyInfo.uptime_ns */
  uint32_t execs;     /* names each Exec (exec_id, pid) */
};

/* Where response frames go: each call gets one whole frame (length prefix included) and
 * returns 1, or 0 with *reason set. */
typedef int (*agent_send_fn)(void *ctx, const uint8_t *frame, uint32_t len, const char **reason);

void agent_state_init(struct agent_state *s);

/* What agent_serve and agent_stdin return besides 0 (a send failed). */
#define AGENT_FINAL 1 /* the final response went out: the connection is done */
#define AGENT_STDIN 2 /* a `cat` with stdin_stream runs: StdinData frames follow */
#define AGENT_SLEEPING 3 /* a `sleep infinity` runs: only a signal ends it */

/* Serves the request in one frame's payload, sending every response frame it has. Returns
 * AGENT_FINAL or AGENT_STDIN, or 0 when a send failed. Malformed input is answered with an
 * Error, never a failure. */
int agent_serve(struct agent_state *s, const uint8_t *request, uint32_t len, agent_send_fn send,
                void *ctx, const char **reason);

/* Sends one Error response frame. */
int agent_send_error(int32_t code, const char *message, agent_send_fn send, void *ctx,
                     const char **reason);

/* Encodes the AgentEvent with `ready` the guest sends on AGENT_PORT_READY_EVENT into buf
 * (at least AGENT_MAX_FRAME bytes); returns the frame's length. */
uint32_t agent_ready_event(struct agent_state *s, uint8_t *buf);

/* For the request handlers (agent_exec.c): sends one AgentResponse whose oneof field `kind`
 * holds the message encoded in inner[0..inner_len). */
int agent_send_response(uint32_t kind, const uint8_t *inner, uint32_t inner_len, agent_send_fn send,
                        void *ctx, const char **reason);

/* Which of AgentRequest's oneof fields `request` holds (0: none), its body in *body; -1 when
 * the request is malformed. */
int agent_request_kind(const uint8_t *request, uint32_t len, const uint8_t **body,
                       uint32_t *body_len);

/* The next frame on a connection agent_serve left at AGENT_STDIN or AGENT_SLEEPING
 * (`running`, agent_exec.c). A SignalRequest whose signal ends a process that does not handle
 * it (all but SIGCHLD, SIGCONT, SIGURG, SIGWINCH and the stop signals) ends the builtin as
 * that signal would: exit_code 128 + N, signal N. StdinData goes to `cat`'s stdout and its
 * eof ends `cat` with exit 0; `sleep` drops it. ResizeRequest frames are taken and have no
 * effect (a builtin has no terminal). Returns as agent_serve; `start_tsc` is when the Exec
 * came, for its run time. */
int agent_stdin(const uint8_t *request, uint32_t len, int running, uint64_t start_tsc,
                agent_send_fn send, void *ctx, const char **reason);

/* Serves an ExecRequest's body (agent_exec.c). */
int agent_exec(struct agent_state *s, const uint8_t *body, uint32_t len, agent_send_fn send,
               void *ctx, const char **reason);
