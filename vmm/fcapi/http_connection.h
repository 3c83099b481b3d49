#pragma once

#include <http_parser.h>

#include <cstddef>
#include <deque>
#include <string>
#include <string_view>
#include <utility>

// One HTTP/1.1 client connection of the API socket, parsed with Node's http-parser
// (Debian's libhttp-parser-dev): requests in, responses out, the socket itself the caller's.
namespace ember::fcapi {

struct HttpRequest {
  std::string method;  // "GET", "PUT", "PATCH", ...
  std::string path;    // the URL's path, without any query
  std::string body;
  bool has_body = false;  // a Content-Length or chunked body was sent, even an empty one
};

struct HttpResponse {
  int status = 204;
  std::string body;  // JSON, or empty
};

// Status line reason phrases for the codes the API answers with.
[[nodiscard]] std::string_view ReasonPhrase(int status);

// Serializes `response` (HTTP/1.1, Content-Type application/json when there is a body).
[[nodiscard]] std::string FormatResponse(const HttpResponse& response, bool close);

// {"fault_message": "..."} with the message escaped as a JSON string.
[[nodiscard]] std::string FaultBody(std::string_view message);

// Splits a connection's byte stream into requests. Owned by the connection's server; not
// thread-safe. A malformed stream, or a body above `max_body`, is an error after which the
// connection must be answered (error_response()) and closed: the stream cannot be resynchronised.
class HttpConnection {
 public:
  explicit HttpConnection(std::size_t max_body);
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // Parses bytes received from the client; complete requests queue up for Next(). Returns
  // false once the stream is broken.
  bool Feed(std::string_view bytes);

  // Takes the oldest complete request; false when there is none.
  bool Next(HttpRequest* request);

  // After Feed() returned false: what to answer before closing.
  [[nodiscard]] const HttpResponse& error_response() const { return error_; }
  // Whether a request's headers asked for "Expect: 100-continue" and its body is still to
  // come: the caller answers "100 Continue" once (curl waits a second for it otherwise).
  // Clears the flag.
  [[nodiscard]] bool TakeContinue() { return std::exchange(continue_pending_, false); }
  // Whether the client asked to close after the requests parsed so far (Connection: close,
  // or HTTP/1.0 without keep-alive).
  [[nodiscard]] bool close_requested() const { return close_requested_; }

 private:
  static int OnMessageBegin(http_parser* parser);
  static int OnUrl(http_parser* parser, const char* at, std::size_t length);
  static int OnHeaderField(http_parser* parser, const char* at, std::size_t length);
  static int OnHeaderValue(http_parser* parser, const char* at, std::size_t length);
  static int OnHeadersComplete(http_parser* parser);
  static int OnBody(http_parser* parser, const char* at, std::size_t length);
  static int OnMessageComplete(http_parser* parser);
  bool Fail(int status, std::string message);
  void NoteHeader();

  http_parser parser_;
  http_parser_settings settings_;
  std::size_t max_body_;
  std::string url_;
  std::string header_field_;  // the header being read, lower case
  std::string header_value_;
  bool header_in_value_ = false;
  bool expects_continue_ = false;  // this request said Expect: 100-continue
  bool continue_pending_ = false;
  HttpRequest current_;
  std::deque<HttpRequest> ready_;
  HttpResponse error_;
  bool broken_ = false;
  bool body_too_large_ = false;
  bool close_requested_ = false;
};

}  // namespace ember::fcapi
