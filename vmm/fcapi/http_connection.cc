#include "vmm/fcapi/http_connection.h"

#include <cstdio>
#include <utility>

namespace ember::fcapi {

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    default: return "Unknown";
  }
}

std::string FaultBody(std::string_view message) {
  std::string body = "{\"fault_message\":\"";
  for (char c : message) {
    auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      body += '\\';
      body += c;
    } else if (byte < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", byte);
      body += escaped;
    } else {
      body += c;
    }
  }
  return body + "\"}";
}

std::string FormatResponse(const HttpResponse& response, bool close) {
  std::string out = "HTTP/1.1 " + std::to_string(response.status) + " " +
                    std::string(ReasonPhrase(response.status)) + "\r\nServer: Ember\r\n";
  if (close) out += "Connection: close\r\n";
  if (response.status != 204) {
    out += "Content-Type: application/json\r\nContent-Length: " +
           std::to_string(response.body.size()) + "\r\n\r\n" + response.body;
  } else {
    out += "\r\n";
  }
  return out;
}

HttpConnection::HttpConnection(std::size_t max_body) : max_body_(max_body) {
  http_parser_init(&parser_, HTTP_REQUEST);
  parser_.data = this;
  http_parser_settings_init(&settings_);
  settings_.on_message_begin = OnMessageBegin;
  settings_.on_url = OnUrl;
  settings_.on_header_field = OnHeaderField;
  settings_.on_header_value = OnHeaderValue;
  settings_.on_headers_complete = OnHeadersComplete;
  settings_.on_body = OnBody;
  settings_.on_message_complete = OnMessageComplete;
}

bool HttpConnection::Fail(int status, std::string message) {
  broken_ = true;
  error_ = {status, FaultBody(message)};
  return false;
}

bool HttpConnection::Feed(std::string_view bytes) {
  if (broken_) return false;
  std::size_t parsed = http_parser_execute(&parser_, &settings_, bytes.data(), bytes.size());
  if (body_too_large_) {
    return Fail(413, "the request body is larger than the " + std::to_string(max_body_) +
                         " bytes this API takes (--http-api-max-payload-size)");
  }
  if (parser_.http_errno != HPE_OK || parsed != bytes.size()) {
    auto error = static_cast<http_errno>(parser_.http_errno);
    return Fail(400, std::string("malformed HTTP request: ") + http_errno_description(error));
  }
  return true;
}

bool HttpConnection::Next(HttpRequest* request) {
  if (ready_.empty()) return false;
  *request = std::move(ready_.front());
  ready_.pop_front();
  return true;
}

int HttpConnection::OnMessageBegin(http_parser* parser) {
  auto* self = static_cast<HttpConnection*>(parser->data);
  self->url_.clear();
  self->current_ = HttpRequest();
  self->header_field_.clear();
  self->header_value_.clear();
  self->header_in_value_ = false;
  self->expects_continue_ = false;
  return 0;
}

int HttpConnection::OnUrl(http_parser* parser, const char* at, std::size_t length) {
  auto* self = static_cast<HttpConnection*>(parser->data);
  self->url_.append(at, length);
  return 0;
}

// Header names and values may arrive in pieces; a field after a value starts the next header.
int HttpConnection::OnHeaderField(http_parser* parser, const char* at, std::size_t length) {
  auto* self = static_cast<HttpConnection*>(parser->data);
  if (self->header_in_value_) {
    self->NoteHeader();
    self->header_field_.clear();
    self->header_value_.clear();
    self->header_in_value_ = false;
  }
  for (std::size_t i = 0; i < length; ++i) {
    char c = at[i];
    self->header_field_ += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  }
  return 0;
}

int HttpConnection::OnHeaderValue(http_parser* parser, const char* at, std::size_t length) {
  auto* self = static_cast<HttpConnection*>(parser->data);
  self->header_in_value_ = true;
  self->header_value_.append(at, length);
  return 0;
}

void HttpConnection::NoteHeader() {
  if (header_field_ != "expect") return;
  std::string value;
  for (char c : header_value_) value += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  expects_continue_ = value == "100-continue";
}

int HttpConnection::OnHeadersComplete(http_parser* parser) {
  auto* self = static_cast<HttpConnection*>(parser->data);
  if (self->header_in_value_) self->NoteHeader();
  self->current_.method = http_method_str(static_cast<http_method>(parser->method));
  http_parser_url url;
  http_parser_url_init(&url);
  if (http_parser_parse_url(self->url_.data(), self->url_.size(), 0, &url) == 0 &&
      (url.field_set & (1u << UF_PATH)) != 0) {
    self->current_.path = self->url_.substr(url.field_data[UF_PATH].off,
                                            url.field_data[UF_PATH].len);
  } else {
    self->current_.path = self->url_;
  }
  // A declared length past the limit is refused before any of the body is read.
  bool chunked = (parser->flags & F_CHUNKED) != 0;
  bool has_length = (parser->flags & F_CONTENTLENGTH) != 0;
  if (has_length && parser->content_length > self->max_body_) {
    self->body_too_large_ = true;
    return -1;  // stops the parser (HPE_CB_headers_complete)
  }
  self->current_.has_body = chunked || has_length;
  self->continue_pending_ =
      self->expects_continue_ && (chunked || (has_length && parser->content_length > 0));
  return 0;
}

int HttpConnection::OnBody(http_parser* parser, const char* at, std::size_t length) {
  auto* self = static_cast<HttpConnection*>(parser->data);
  if (self->current_.body.size() + length > self->max_body_) {  // a chunked body growing
    self->body_too_large_ = true;
    return -1;
  }
  self->current_.body.append(at, length);
  return 0;
}

int HttpConnection::OnMessageComplete(http_parser* parser) {
  auto* self = static_cast<HttpConnection*>(parser->data);
  self->continue_pending_ = false;  // the body came without waiting
  if (!http_should_keep_alive(parser)) self->close_requested_ = true;
  self->ready_.push_back(std::move(self->current_));
  self->current_ = HttpRequest();
  return 0;
}

}  // namespace ember::fcapi
