#include "vmm/base/event_loop.h"

#include <gtest/gtest.h>
#include <sys/epoll.h>

#include <memory>
#include <thread>

namespace ember::base {
namespace {

TEST(EventLoop, ReadyFdRunsItsHandler) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  auto event = EventFd::Create();
  ASSERT_TRUE(event.ok());
  int calls = 0;
  ASSERT_TRUE(loop->Add(event->Get(), EPOLLIN, [&](std::uint32_t) {
                     event->Consume();
                     ++calls;
                   }).ok());
  event->Signal();
  ASSERT_TRUE(loop->RunOnce(1000).ok());
  EXPECT_EQ(calls, 1);
}

TEST(EventLoop, PostFromAnotherThreadRunsOnTheLoopAndStopEndsRun) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  std::thread::id ran_on;
  std::thread poster([&] {
    loop->Post([&] { ran_on = std::this_thread::get_id(); });
    loop->Stop();
  });
  ASSERT_TRUE(loop->Run().ok());
  poster.join();
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(EventLoop, RemovedFdNoLongerDispatches) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  auto event = EventFd::Create();
  ASSERT_TRUE(event.ok());
  int calls = 0;
  ASSERT_TRUE(loop->Add(event->Get(), EPOLLIN, [&](std::uint32_t) { ++calls; }).ok());
  loop->Remove(event->Get());
  event->Signal();
  ASSERT_TRUE(loop->RunOnce(10).ok());
  EXPECT_EQ(calls, 0);
}

TEST(EventLoop, HandlerThatRemovesItselfKeepsItsStateUntilItReturns) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  auto event = EventFd::Create();
  ASSERT_TRUE(event.ok());
  int calls = 0;
  const int fd = event->Get();
  // The counter lives only in the handler's captures, so a handler destroyed while it runs
  // is a use after free (which the sanitizer build reports).
  ASSERT_TRUE(loop->Add(fd, EPOLLIN, [&, fd, counter = std::make_shared<int>(0)](std::uint32_t) {
                     loop->Remove(fd);
                     // Still alive: the loop destroys the handler only after the round.
                     calls += ++*counter;
                   }).ok());
  event->Signal();
  ASSERT_TRUE(loop->RunOnce(1000).ok());
  ASSERT_TRUE(loop->RunOnce(10).ok());
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace ember::base
