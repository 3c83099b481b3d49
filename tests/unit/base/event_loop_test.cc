#include "vmm/base/event_loop.h"

#include <gtest/gtest.h>
#include <sys/epoll.h>

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

}  // namespace
}  // namespace ember::base
