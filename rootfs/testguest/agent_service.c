#include "agent_service.h"

#include "lib.h"
#include "pb.h"
#include "tsc.h"

/* AgentRequest's oneof fields. */
#define REQ_READY 1
#define REQ_EXEC 2
#define REQ_INVOKE 7
#define REQ_POST_RESTORE 8
/* AgentResponse's. */
#define RESP_READY 1
#define RESP_INVOKE_RESULT 5
#define RESP_POST_RESTORE_RESULT 6
#define RESP_ERROR 8

#define AGENT_VERSION "ember-testguest"
#define FNV64_OFFSET 0xcbf29ce484222325ull
#define FNV64_PRIME 0x100000001b3ull

/* Encoding space for one response's inner message, and for its frame. */
static uint8_t inner_buf[AGENT_MAX_FRAME];
static uint8_t frame_buf[AGENT_MAX_FRAME];

/* A boot_id: the TSC scrambled (splitmix64), never 0 and never `old`. */
static uint64_t new_boot_id(uint64_t old) {
  uint64_t z = rdtsc() ^ old;
  for (;;) {
    z += 0x9e3779b97f4a7c15ull;
    uint64_t x = z;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    if (x != 0 && x != old) return x;
  }
}

void agent_state_init(struct agent_state *s) {
  s->start_tsc = rdtsc();
  s->boot_id = new_boot_id(0);
  s->execs = 0;
}

static uint32_t frame_of(uint32_t kind, const uint8_t *inner, uint32_t inner_len) {
  struct pb_writer w = pb_writer_of(frame_buf + 4, AGENT_MAX_FRAME - 4);
  pb_put_bytes(&w, kind, inner, inner_len);
  if (w.overflow) return 0;
  for (int i = 0; i < 4; i++) frame_buf[i] = (uint8_t)(w.len >> (8 * i));
  return w.len + 4;
}

int agent_send_response(uint32_t kind, const uint8_t *inner, uint32_t inner_len, agent_send_fn send,
                        void *ctx, const char **reason) {
  uint32_t len = frame_of(kind, inner, inner_len);
  if (len == 0) {
    /* Cannot happen while outputs stay within the request's size; say so rather than
     * sending a truncated message. */
    *reason = "agent response larger than the guest's frame buffer";
    return 0;
  }
  return send(ctx, frame_buf, len, reason);
}

int agent_send_error(int32_t code, const char *message, agent_send_fn send, void *ctx,
                     const char **reason) {
  struct pb_writer w = pb_writer_of(inner_buf, sizeof(inner_buf));
  pb_put_varint(&w, 1, (uint64_t)(int64_t)code);
  pb_put_bytes(&w, 2, message, (uint32_t)strlen(message));
  return agent_send_response(RESP_ERROR, w.buf, w.len, send, ctx, reason);
}

/* ReadyInfo: protocol version 1, the guest's name, boot_id and uptime (TSC-derived). */
static struct pb_writer ready_info(struct agent_state *s) {
  struct pb_writer w = pb_writer_of(inner_buf, sizeof(inner_buf));
  pb_put_varint(&w, 1, 1);
  pb_put_bytes(&w, 2, AGENT_VERSION, (uint32_t)strlen(AGENT_VERSION));
  pb_put_varint(&w, 4, s->boot_id);
  pb_put_varint(&w, 5, (rdtsc() - s->start_tsc) * 10 / (TSC_PER_SECOND / 100000000ull));
  return w;
}

uint32_t agent_ready_event(struct agent_state *s, uint8_t *buf) {
  struct pb_writer info = ready_info(s);
  uint32_t len = frame_of(1 /* AgentEvent.ready */, info.buf, info.len);
  memcpy(buf, frame_buf, len);
  return len;
}

/* A payload "spin:<ms>:..." keeps the handler busy for about <ms> milliseconds of TSC time
 * before it answers, for the host's tests of a handler that outlives its timeout. Returns the
 * milliseconds, 0 for any other payload. */
static uint64_t spin_ms(const uint8_t *payload, uint32_t len) {
  static const char prefix[] = "spin:";
  const uint32_t n = sizeof(prefix) - 1;
  if (len <= n || memcmp(payload, prefix, n) != 0) return 0;
  uint64_t ms = 0;
  for (uint32_t i = n; i < len && payload[i] >= '0' && payload[i] <= '9' && ms < 3600000; i++) {
    ms = ms * 10 + (uint64_t)(payload[i] - '0');
  }
  return ms;
}

/* The fixed handler agent.proto names: the payload's bytes reversed, in one last result. */
static int invoke(const uint8_t *body, uint32_t len, agent_send_fn send, void *ctx,
                  const char **reason) {
  static uint8_t reversed[AGENT_MAX_REQUEST];
  const uint8_t *payload = 0;
  uint32_t payload_len = 0;
  struct pb_reader r = pb_reader_of(body, len);
  uint32_t field, type;
  while (pb_next(&r, &field, &type)) {
    if (field == 1 && type == PB_LEN) {
      (void)pb_read_len(&r, &payload, &payload_len);
    } else {
      (void)pb_skip(&r, type);
    }
  }
  if (r.error)
    return agent_send_error(AGENT_INVALID_ARGUMENT, "malformed InvokeRequest", send, ctx, reason);
  uint64_t spin = spin_ms(payload, payload_len);
  if (spin != 0) {
    uint64_t until = rdtsc() + spin * (TSC_PER_SECOND / 1000);
    while (rdtsc() < until) {
    }
  }
  for (uint32_t i = 0; i < payload_len; i++) reversed[i] = payload[payload_len - 1 - i];
  struct pb_writer w = pb_writer_of(inner_buf, sizeof(inner_buf));
  pb_put_bytes(&w, 1, reversed, payload_len);
  pb_put_varint(&w, 2, 1);
  return agent_send_response(RESP_INVOKE_RESULT, w.buf, w.len, send, ctx, reason);
}

/* The guest has no clock or RNG to set: it answers with the clock it was given, the
 * entropy's count and FNV-1a 64, and a new boot_id, which is what the host can check. */
static int post_restore(struct agent_state *s, const uint8_t *body, uint32_t len,
                        agent_send_fn send, void *ctx, const char **reason) {
  uint64_t clock = 0, fnv = FNV64_OFFSET;
  const uint8_t *entropy = 0;
  uint32_t entropy_len = 0;
  struct pb_reader r = pb_reader_of(body, len);
  uint32_t field, type;
  while (pb_next(&r, &field, &type)) {
    if (field == 1 && type == PB_VARINT) {
      (void)pb_read_varint(&r, &clock);
    } else if (field == 2 && type == PB_LEN) {
      (void)pb_read_len(&r, &entropy, &entropy_len);
    } else {
      (void)pb_skip(&r, type);
    }
  }
  if (r.error) {
    return agent_send_error(AGENT_INVALID_ARGUMENT, "malformed PostRestoreRequest", send, ctx,
                            reason);
  }
  for (uint32_t i = 0; i < entropy_len; i++) fnv = (fnv ^ entropy[i]) * FNV64_PRIME;
  s->boot_id = new_boot_id(s->boot_id);
  struct pb_writer w = pb_writer_of(inner_buf, sizeof(inner_buf));
  pb_put_varint(&w, 1, clock);
  pb_put_varint(&w, 2, entropy_len);
  pb_put_varint(&w, 3, fnv);
  pb_put_varint(&w, 4, s->boot_id);
  return agent_send_response(RESP_POST_RESTORE_RESULT, w.buf, w.len, send, ctx, reason);
}

int agent_request_kind(const uint8_t *request, uint32_t len, const uint8_t **body,
                       uint32_t *body_len) {
  /* The oneof: the last kind field wins, as in any protobuf parser; others are skipped. */
  int kind = 0;
  *body = 0;
  *body_len = 0;
  struct pb_reader r = pb_reader_of(request, len);
  uint32_t field, type;
  while (pb_next(&r, &field, &type)) {
    if (field >= 1 && field <= 9 && type == PB_LEN) {
      kind = (int)field;
      (void)pb_read_len(&r, body, body_len);
    } else if (field >= 1 && field <= 9) {
      r.error = 1; /* a known field with the wrong wire type */
    } else {
      (void)pb_skip(&r, type);
    }
  }
  return r.error ? -1 : kind;
}

int agent_serve(struct agent_state *s, const uint8_t *request, uint32_t len, agent_send_fn send,
                void *ctx, const char **reason) {
  const uint8_t *body;
  uint32_t body_len;
  int kind = agent_request_kind(request, len, &body, &body_len);
  if (kind < 0) {
    return agent_send_error(AGENT_INVALID_ARGUMENT, "malformed AgentRequest", send, ctx, reason);
  }
  /* Every answer but Exec's is final: 1 is AGENT_FINAL. */
  switch (kind) {
    case REQ_READY: {
      struct pb_writer w = ready_info(s);
      return agent_send_response(RESP_READY, w.buf, w.len, send, ctx, reason);
    }
    case REQ_EXEC:
      return agent_exec(s, body, body_len, send, ctx, reason);
    case REQ_INVOKE:
      return invoke(body, body_len, send, ctx, reason);
    case REQ_POST_RESTORE:
      return post_restore(s, body, body_len, send, ctx, reason);
    default:
      return agent_send_error(AGENT_UNIMPLEMENTED,
                              "the test guest serves Ready, Exec, Invoke and PostRestore only",
                              send, ctx, reason);
  }
}
