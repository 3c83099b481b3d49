// The API front's HTTP layer (vmm/fcapi/http_connection.h) on byte streams, no socket.
#include "vmm/fcapi/http_connection.h"

#include <gtest/gtest.h>

#include <string>

namespace ember::fcapi {
namespace {

constexpr std::size_t kLimit = 64;

TEST(HttpConnection, RequestSplitAcrossReadsIsParsedOnce) {
  HttpConnection http(kLimit);
  std::string bytes = "PUT /drives/d1?x=1 HTTP/1.1\r\nContent-Length: 4\r\n\r\n{\"a\"";
  HttpRequest request;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    ASSERT_TRUE(http.Feed(bytes.substr(i, 1)));
    if (i + 1 < bytes.size()) {
      EXPECT_FALSE(http.Next(&request)) << "complete after " << i + 1 << " bytes";
    }
  }
  ASSERT_TRUE(http.Next(&request));
  EXPECT_EQ(request.method, "PUT");
  EXPECT_EQ(request.path, "/drives/d1");
  EXPECT_EQ(request.body, "{\"a\"");
  EXPECT_FALSE(http.Next(&request));
}

TEST(HttpConnection, PipelinedRequestsComeOutInOrder) {
  HttpConnection http(kLimit);
  ASSERT_TRUE(http.Feed("GET / HTTP/1.1\r\n\r\nPATCH /vm HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
                        "GET /version HTTP/1.1\r\n\r\n"));
  HttpRequest request;
  ASSERT_TRUE(http.Next(&request));
  EXPECT_EQ(request.path, "/");
  ASSERT_TRUE(http.Next(&request));
  EXPECT_EQ(request.method, "PATCH");
  EXPECT_EQ(request.body, "{}");
  ASSERT_TRUE(http.Next(&request));
  EXPECT_EQ(request.path, "/version");
}

TEST(HttpConnection, DeclaredBodyOverLimitIs413BeforeTheBody) {
  HttpConnection http(kLimit);
  EXPECT_FALSE(http.Feed("PUT /logger HTTP/1.1\r\nContent-Length: 65\r\n\r\n"));
  EXPECT_EQ(http.error_response().status, 413);
  EXPECT_NE(http.error_response().body.find("fault_message"), std::string::npos);
  EXPECT_FALSE(http.Feed("more"));  // broken for good
}

TEST(HttpConnection, ChunkedBodyGrowingOverLimitIs413) {
  HttpConnection http(kLimit);
  EXPECT_TRUE(http.Feed("PUT /logger HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n" +
                        std::string(32, 'a') + "\r\n"));
  EXPECT_FALSE(http.Feed("21\r\n" + std::string(33, 'b') + "\r\n"));
  EXPECT_EQ(http.error_response().status, 413);
}

TEST(HttpConnection, BodyAtLimitIsTaken) {
  HttpConnection http(kLimit);
  ASSERT_TRUE(http.Feed("PUT /logger HTTP/1.1\r\nContent-Length: 64\r\n\r\n" +
                        std::string(kLimit, 'z')));
  HttpRequest request;
  ASSERT_TRUE(http.Next(&request));
  EXPECT_EQ(request.body.size(), kLimit);
}

TEST(HttpConnection, GarbageIs400NamingTheParserError) {
  HttpConnection http(kLimit);
  EXPECT_FALSE(http.Feed("\x01\x02 nonsense\r\n\r\n"));
  EXPECT_EQ(http.error_response().status, 400);
  EXPECT_NE(http.error_response().body.find("malformed HTTP request"), std::string::npos);
}

TEST(HttpConnection, ExpectContinueIsReportedOnceUntilTheBodyComes) {
  HttpConnection http(kLimit);
  ASSERT_TRUE(http.Feed("PUT /logger HTTP/1.1\r\nEXPECT: 100-Continue\r\nContent-Length: 2\r\n\r\n"));
  EXPECT_TRUE(http.TakeContinue());
  EXPECT_FALSE(http.TakeContinue());
  ASSERT_TRUE(http.Feed("{}PUT /logger HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n"
                        "\r\n{}"));
  EXPECT_FALSE(http.TakeContinue()) << "the body came with the headers";
}

TEST(HttpConnection, ConnectionCloseIsNoted) {
  HttpConnection http(kLimit);
  ASSERT_TRUE(http.Feed("GET / HTTP/1.1\r\n\r\n"));
  EXPECT_FALSE(http.close_requested());
  ASSERT_TRUE(http.Feed("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
  EXPECT_TRUE(http.close_requested());
}

TEST(HttpResponseFormat, NoContentHasNoBodyAndErrorsAreJson) {
  EXPECT_EQ(FormatResponse({204, ""}, false), "HTTP/1.1 204 No Content\r\nServer: Ember\r\n\r\n");
  std::string error = FormatResponse({400, FaultBody("bad \"x\"\n")}, true);
  EXPECT_NE(error.find("Connection: close\r\n"), std::string::npos);
  EXPECT_NE(error.find("Content-Type: application/json\r\n"), std::string::npos);
  EXPECT_NE(error.find("{\"fault_message\":\"bad \\\"x\\\"\\u000a\"}"), std::string::npos);
}

}  // namespace
}  // namespace ember::fcapi
