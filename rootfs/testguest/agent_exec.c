/* Exec in the test guest: no processes, only four builtins run in place.
 * - `echo ARGS`: stdout is ARGS joined by spaces and a newline; exit 0.
 * - `cat`: stdout is the request's stdin bytes, then, with stdin_stream, each StdinData's
 *   until its eof; exit 0.
 * - `exit N`: exit code N (0 without N).
 * - `sleep infinity`: runs until a SignalRequest on its connection ends it (the container
 *   process that ember-runtime's tests kill).
 * A streaming `cat` or a `sleep` ends as a process without handlers would on a signal that
 * terminates by default (agent_stdin). Any other argv[0] is answered by an Error NOT_FOUND
 * before anything starts, as ember-agent answers a program it cannot find in PATH. A tty is
 * taken (the builtins write one stream, stdout, which is what a tty carries); a detached
 * process is UNIMPLEMENTED. */
#include "agent_service.h"
#include "lib.h"
#include "pb.h"
#include "tsc.h"

#define REQ_STDIN_DATA 3
#define REQ_SIGNAL 4
#define REQ_RESIZE 5
#define RESP_EXEC_STARTED 2
#define RESP_OUTPUT 3
#define RESP_EXIT 4
#define STREAM_STDOUT 1
#define MAX_ARGS 64

struct exec_request {
  const uint8_t *argv[MAX_ARGS];
  uint32_t argv_len[MAX_ARGS];
  uint32_t argc;
  const uint8_t *in;
  uint32_t in_len;
  int stdin_stream;
  int unsupported; /* detach asked for */
};

static uint8_t msg_buf[AGENT_MAX_FRAME];
static uint8_t out_buf[AGENT_MAX_REQUEST];

/* 1, or 0 when the body is malformed or has more than MAX_ARGS arguments. */
static int parse(const uint8_t *body, uint32_t len, struct exec_request *req) {
  /* Only the counters: clearing the whole struct costs ~1 us per byte where guest code is
   * emulated. */
  req->argc = 0;
  req->in = 0;
  req->in_len = 0;
  req->stdin_stream = 0;
  req->unsupported = 0;
  struct pb_reader r = pb_reader_of(body, len);
  uint32_t field, type;
  while (pb_next(&r, &field, &type)) {
    uint64_t flag = 0;
    if (field == 1 && type == PB_LEN) {
      if (req->argc == MAX_ARGS) return 0;
      (void)pb_read_len(&r, &req->argv[req->argc], &req->argv_len[req->argc]);
      req->argc++;
    } else if (field == 6 && type == PB_LEN) {
      (void)pb_read_len(&r, &req->in, &req->in_len);
    } else if (field == 7 && type == PB_VARINT) {
      if (pb_read_varint(&r, &flag)) req->stdin_stream = flag != 0;
    } else if (field == 13 && type == PB_VARINT) {
      if (pb_read_varint(&r, &flag) && flag) req->unsupported = 1;
    } else {
      (void)pb_skip(&r, type);
    }
  }
  return !r.error;
}

static int is(const struct exec_request *req, uint32_t i, const char *word) {
  uint32_t n = (uint32_t)strlen(word);
  return req->argv_len[i] == n && memcmp(req->argv[i], word, n) == 0;
}

/* `exit`'s argument as a shell takes it: decimal, optionally negative, within int32. */
static int parse_code(const uint8_t *s, uint32_t n, int32_t *code) {
  int negative = n > 0 && s[0] == '-';
  int64_t v = 0;
  if (n == (uint32_t)negative || n > 11) return 0;
  for (uint32_t i = (uint32_t)negative; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    v = v * 10 + (s[i] - '0');
  }
  if (negative) v = -v;
  if (v < -2147483648ll || v > 2147483647ll) return 0;
  *code = (int32_t)v;
  return 1;
}

static int send_started(struct agent_state *s, agent_send_fn send, void *ctx, const char **reason) {
  char id[24] = "testguest-";
  uint32_t n = 10, v = ++s->execs;
  char digits[10];
  uint32_t d = 0;
  do digits[d++] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  while (d) id[n++] = digits[--d];
  struct pb_writer w = pb_writer_of(msg_buf, sizeof(msg_buf));
  pb_put_bytes(&w, 1, id, n);
  pb_put_varint(&w, 2, s->execs);
  return agent_send_response(RESP_EXEC_STARTED, w.buf, w.len, send, ctx, reason);
}

static int send_stdout(const uint8_t *data, uint32_t len, agent_send_fn send, void *ctx,
                       const char **reason) {
  if (len == 0) return 1;
  struct pb_writer w = pb_writer_of(msg_buf, sizeof(msg_buf));
  pb_put_varint(&w, 1, STREAM_STDOUT);
  pb_put_bytes(&w, 2, data, len);
  return agent_send_response(RESP_OUTPUT, w.buf, w.len, send, ctx, reason);
}

/* `signal` 0: exited with `code`; else ended by that signal (code 128 + signal). */
static int send_exit(int32_t code, int32_t signal, uint64_t start_tsc, agent_send_fn send,
                     void *ctx, const char **reason) {
  struct pb_writer w = pb_writer_of(msg_buf, sizeof(msg_buf));
  if (code != 0) pb_put_varint(&w, 1, (uint64_t)(int64_t)code);
  if (signal != 0) pb_put_varint(&w, 2, (uint64_t)(int64_t)signal);
  pb_put_varint(&w, 4, (rdtsc() - start_tsc) / (TSC_PER_SECOND / 1000000ull));
  return agent_send_response(RESP_EXIT, w.buf, w.len, send, ctx, reason);
}

int agent_exec(struct agent_state *s, const uint8_t *body, uint32_t len, agent_send_fn send,
               void *ctx, const char **reason) {
  uint64_t start = rdtsc();
  static struct exec_request req;
  if (!parse(body, len, &req)) {
    return agent_send_error(AGENT_INVALID_ARGUMENT, "malformed ExecRequest", send, ctx, reason);
  }
  if (req.argc == 0) {
    return agent_send_error(AGENT_INVALID_ARGUMENT, "Exec needs an argv", send, ctx, reason);
  }
  if (req.unsupported) {
    return agent_send_error(AGENT_UNIMPLEMENTED, "the test guest's builtins cannot detach",
                            send, ctx, reason);
  }
  int32_t code = 0;
  uint32_t out_len = 0;
  if (is(&req, 0, "echo")) {
    /* Each argument costs at least its length + 2 bytes of the request, so the output (its
     * length + 1, and the newline) fits in out_buf. */
    for (uint32_t i = 1; i < req.argc; i++) {
      if (i > 1) out_buf[out_len++] = ' ';
      memcpy(out_buf + out_len, req.argv[i], req.argv_len[i]);
      out_len += req.argv_len[i];
    }
    out_buf[out_len++] = '\n';
  } else if (is(&req, 0, "cat")) {
    memcpy(out_buf, req.in, req.in_len);
    out_len = req.in_len;
  } else if (is(&req, 0, "sleep")) {
    if (req.argc != 2 || !is(&req, 1, "infinity")) {
      return agent_send_error(AGENT_INVALID_ARGUMENT,
                              "the test guest's sleep takes only `infinity` (it has no timer)",
                              send, ctx, reason);
    }
  } else if (is(&req, 0, "exit")) {
    if (req.argc > 2 || (req.argc == 2 && !parse_code(req.argv[1], req.argv_len[1], &code))) {
      return agent_send_error(AGENT_INVALID_ARGUMENT, "exit takes one decimal exit code", send, ctx,
                              reason);
    }
  } else {
    return agent_send_error(AGENT_NOT_FOUND,
                            "not a builtin of the test guest (echo, cat, exit and sleep are)",
                            send, ctx, reason);
  }
  if (!send_started(s, send, ctx, reason) || !send_stdout(out_buf, out_len, send, ctx, reason)) {
    return 0;
  }
  if (is(&req, 0, "sleep")) return AGENT_SLEEPING;
  if (req.stdin_stream && is(&req, 0, "cat")) return AGENT_STDIN;
  return send_exit(code, 0, start, send, ctx, reason);
}

/* Whether signal `sig` ends a process that does not handle it: all but those ignored by
 * default (SIGCHLD 17, SIGCONT 18, SIGURG 23, SIGWINCH 28) and the stop signals (SIGSTOP 19,
 * SIGTSTP 20, SIGTTIN 21, SIGTTOU 22), which a builtin cannot honour. */
static int ends_process(uint64_t sig) {
  return sig >= 1 && sig <= 64 && !(sig >= 17 && sig <= 23) && sig != 28;
}

int agent_stdin(const uint8_t *request, uint32_t len, int running, uint64_t start_tsc,
                agent_send_fn send, void *ctx, const char **reason) {
  const uint8_t *body, *data = 0;
  uint32_t body_len, data_len = 0, field, type;
  uint64_t eof = 0, sig = 0;
  int kind = agent_request_kind(request, len, &body, &body_len);
  struct pb_reader b = pb_reader_of(body, body_len);
  while ((kind == REQ_STDIN_DATA || kind == REQ_SIGNAL) && pb_next(&b, &field, &type)) {
    if (kind == REQ_STDIN_DATA && field == 1 && type == PB_LEN) {
      (void)pb_read_len(&b, &data, &data_len);
    } else if (kind == REQ_STDIN_DATA && field == 2 && type == PB_VARINT) {
      (void)pb_read_varint(&b, &eof);
    } else if (kind == REQ_SIGNAL && field == 2 && type == PB_VARINT) {
      (void)pb_read_varint(&b, &sig);
    } else {
      (void)pb_skip(&b, type);
    }
  }
  if (kind < 0 || b.error) {
    return agent_send_error(AGENT_INVALID_ARGUMENT, "malformed frame on an Exec's connection", send,
                            ctx, reason);
  }
  if (kind == REQ_SIGNAL && ends_process(sig)) {
    return send_exit(128 + (int32_t)sig, (int32_t)sig, start_tsc, send, ctx, reason);
  }
  if (kind == REQ_SIGNAL || kind == REQ_RESIZE) return running;
  if (kind != REQ_STDIN_DATA) {
    return agent_send_error(AGENT_INVALID_ARGUMENT,
                            "an Exec's connection carries StdinData, SignalRequest or "
                            "ResizeRequest",
                            send, ctx, reason);
  }
  if (running == AGENT_SLEEPING) return running; /* sleep reads no stdin */
  if (!send_stdout(data, data_len, send, ctx, reason)) return 0;
  if (!eof) return AGENT_STDIN;
  return send_exit(0, 0, start_tsc, send, ctx, reason);
}
