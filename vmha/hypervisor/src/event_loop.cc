// The shared libvirt event loop thread.
#include "event_loop.h"

#include <chrono>
#include <mutex>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

namespace vmha::hv::detail {
namespace {

std::mutex loop_mutex;
std::weak_ptr<EventLoop> current_loop;  // guarded by loop_mutex

void silent(void* /*user_data*/, virErrorPtr /*error*/) {}

void wake(int /*timer*/, void* /*opaque*/) {}

}  // namespace

std::shared_ptr<EventLoop> EventLoop::acquire() {
    static std::once_flag registered;
    std::call_once(registered, [] {
        virSetErrorFunc(nullptr, silent);  // libvirt must never print anything itself
        virInitialize();
        virEventRegisterDefaultImpl();
        virResetLastError();
    });
    std::lock_guard lock(loop_mutex);
    if (auto loop = current_loop.lock()) return loop;
    std::shared_ptr<EventLoop> loop(new EventLoop());
    current_loop = loop;
    return loop;
}

EventLoop::EventLoop()
    : thread_([stop = stop_] {
          virSetErrorFunc(nullptr, silent);
          while (!stop->load()) {
              if (virEventRunDefaultImpl() < 0) {
                  virResetLastError();
                  std::this_thread::sleep_for(std::chrono::milliseconds(10));
              }
          }
      }) {}

EventLoop::~EventLoop() {
    stop_->store(true);
    // A timer due at once makes the running iteration return.
    wake_timer_ = virEventAddTimeout(0, wake, nullptr, nullptr);
    if (thread_.get_id() == std::this_thread::get_id()) {
        thread_.detach();  // released by an event callback: the loop ends after it returns
    } else if (thread_.joinable()) {
        thread_.join();
    }
    if (wake_timer_ >= 0) virEventRemoveTimeout(wake_timer_);
    virResetLastError();
}

}  // namespace vmha::hv::detail
