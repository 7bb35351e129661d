// The process's libvirt event loop (libvirt delivers events and keepalives only through it).
#pragma once

#include <atomic>
#include <memory>
#include <thread>

namespace vmha::hv::detail {

// virEventRegisterDefaultImpl() is called once per process, before the first connection is
// opened; one thread runs virEventRunDefaultImpl() while at least one holder of acquire()'s
// pointer exists. The last holder stops and joins the thread. Thread-safe.
class EventLoop {
public:
    static std::shared_ptr<EventLoop> acquire();

    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;
    ~EventLoop();

private:
    EventLoop();
    // Shared with the thread, which may outlive this object when detached.
    std::shared_ptr<std::atomic<bool>> stop_ = std::make_shared<std::atomic<bool>>(false);
    int wake_timer_ = -1;
    std::thread thread_;
};

}  // namespace vmha::hv::detail
