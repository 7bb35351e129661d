// module::Clock over a Boost.Asio steady_timer. Owned by the io_context's thread.
#pragma once

#include <memory>

#include <vmha/services/asio.h>

#include <vmha/module/ports.h>

namespace vmha::daemon {

class AsioClock final : public module::Clock {
public:
    explicit AsioClock(boost::asio::io_context& io) : io_(io) {}
    module::TimePoint now() const override { return std::chrono::steady_clock::now(); }
    std::unique_ptr<Token> after(module::Duration delay, std::function<void()> fn) override {
        auto token = std::make_unique<TimerToken>(io_);
        token->timer.expires_after(delay);
        token->timer.async_wait([fn = std::move(fn)](const boost::system::error_code& ec) {
            if (!ec) fn();
        });
        return token;
    }

private:
    struct TimerToken final : Token {
        explicit TimerToken(boost::asio::io_context& io) : timer(io) {}
        ~TimerToken() override { timer.cancel(); }
        boost::asio::steady_timer timer;
    };
    boost::asio::io_context& io_;
};

}  // namespace vmha::daemon
