// The tcp checker: a TCP connection to host:port opens within the timeout. Resolution and
// connection are asynchronous on the executor; the connection is closed at once.
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <vmha/config/units.h>

#include "probes.h"

namespace vmha::checkers::detail {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

class Attempt : public std::enable_shared_from_this<Attempt> {
  public:
    Attempt(const asio::any_io_executor& ex, std::string target, std::chrono::milliseconds timeout,
            Probe::Done done)
        : target_(std::move(target)),
          timeout_(timeout),
          done_(std::move(done)),
          resolver_(ex),
          socket_(ex),
          deadline_(ex) {}

    void start(const std::string& host, std::uint16_t port) {
        deadline_.expires_after(timeout_);
        deadline_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
            auto self = weak.lock();
            if (ec || !self) return;
            self->finish(make_result(Verdict::failed,
                                     fmt::format("tcp {}: no connection within {}", self->target_,
                                                 config::format_duration(self->timeout_))));
        });
        resolver_.async_resolve(
            host, std::to_string(port),
            [self = shared_from_this()](boost::system::error_code ec,
                                        tcp::resolver::results_type r) {
                if (!self->done_) return;
                if (ec) {
                    self->finish(make_result(Verdict::failed,
                                             fmt::format("tcp {}: the host name could not be "
                                                         "resolved: {}",
                                                         self->target_, ec.message())));
                    return;
                }
                asio::async_connect(
                    self->socket_, r, [self](boost::system::error_code cec, const tcp::endpoint&) {
                        if (cec) {
                            self->finish(make_result(
                                Verdict::failed,
                                fmt::format("tcp {}: {}", self->target_, cec.message())));
                        } else {
                            self->finish(make_result(
                                Verdict::healthy, fmt::format("tcp {}: connected", self->target_)));
                        }
                    });
            });
    }

    // Executor only. Reports once; the other pending operations are cancelled.
    void finish(CheckResult result) {
        if (!done_) return;
        Probe::Done done = std::move(done_);
        done_ = nullptr;
        close();
        done(std::move(result));
    }

    void cancel() {
        done_ = nullptr;
        close();
    }

  private:
    void close() {
        deadline_.cancel();
        resolver_.cancel();
        boost::system::error_code ignored;
        socket_.close(ignored);
    }

    std::string target_;
    std::chrono::milliseconds timeout_;
    Probe::Done done_;
    tcp::resolver resolver_;
    tcp::socket socket_;
    asio::steady_timer deadline_;
};

class TcpProbe : public Probe {
  public:
    TcpProbe(asio::any_io_executor executor, std::string host, std::uint16_t port,
             std::chrono::milliseconds timeout)
        : executor_(std::move(executor)), host_(std::move(host)), port_(port), timeout_(timeout) {}
    ~TcpProbe() override { TcpProbe::cancel(); }

    void run(Done done) override {
        const std::string target = host_.find(':') == std::string::npos
                                       ? fmt::format("\"{}:{}\"", host_, port_)
                                       : fmt::format("\"[{}]:{}\"", host_, port_);
        auto attempt = std::make_shared<Attempt>(executor_, target, timeout_, std::move(done));
        current_ = attempt;
        attempt->start(host_, port_);
    }

    void cancel() override {
        if (auto a = current_.lock()) a->cancel();
        current_.reset();
    }

  private:
    asio::any_io_executor executor_;
    std::string host_;
    std::uint16_t port_;
    std::chrono::milliseconds timeout_;
    std::weak_ptr<Attempt> current_;
};

}  // namespace

std::unique_ptr<Probe> make_tcp_probe(asio::any_io_executor executor, std::string host,
                                      std::uint16_t port, std::chrono::milliseconds timeout) {
    return std::make_unique<TcpProbe>(std::move(executor), std::move(host), port, timeout);
}

}  // namespace vmha::checkers::detail
