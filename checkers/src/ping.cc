// The ping checker: one ICMP (or ICMPv6) echo request per check over a raw socket (vmhad runs
// as root, or needs CAP_NET_RAW); healthy when the matching echo reply arrives in time.
#include <array>
#include <random>

#include <boost/asio/ip/icmp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <vmha/config/units.h>

#include "probes.h"

namespace vmha::checkers::detail {

namespace asio = boost::asio;
using icmp = asio::ip::icmp;

namespace {

constexpr std::uint8_t echo_request_v4 = 8;
constexpr std::uint8_t echo_reply_v4 = 0;
constexpr std::uint8_t echo_request_v6 = 128;
constexpr std::uint8_t echo_reply_v6 = 129;

std::uint16_t internet_checksum(const std::uint8_t* data, std::size_t size) {
    std::uint32_t sum = 0;
    for (std::size_t i = 0; i + 1 < size; i += 2) {
        sum += static_cast<std::uint32_t>(data[i] << 8 | data[i + 1]);
    }
    if (size % 2 != 0) sum += static_cast<std::uint32_t>(data[size - 1] << 8);
    while (sum >> 16 != 0) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<std::uint16_t>(~sum & 0xffff);
}

class Attempt : public std::enable_shared_from_this<Attempt> {
  public:
    Attempt(const asio::any_io_executor& ex, std::string host, std::chrono::milliseconds timeout,
            std::uint16_t id, std::uint16_t sequence, Probe::Done done)
        : host_(std::move(host)),
          timeout_(timeout),
          id_(id),
          sequence_(sequence),
          done_(std::move(done)),
          resolver_(ex),
          socket_(ex),
          deadline_(ex) {}

    void start() {
        deadline_.expires_after(timeout_);
        deadline_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
            auto self = weak.lock();
            if (ec || !self) return;
            self->finish(
                make_result(Verdict::failed,
                            fmt::format("host \"{}\" did not answer ping within {}", self->host_,
                                        config::format_duration(self->timeout_))));
        });
        resolver_.async_resolve(
            host_, "",
            [self = shared_from_this()](boost::system::error_code ec,
                                        icmp::resolver::results_type results) {
                if (!self->done_) return;
                if (ec || results.empty()) {
                    self->finish(make_result(Verdict::failed,
                                             fmt::format("host \"{}\" could not be resolved: {}",
                                                         self->host_, ec.message())));
                    return;
                }
                self->send(results.begin()->endpoint());
            });
    }

    void cancel() {
        done_ = nullptr;
        close();
    }

  private:
    void send(const icmp::endpoint& to) {
        v6_ = to.address().is_v6();
        boost::system::error_code ec;
        socket_.open(v6_ ? icmp::v6() : icmp::v4(), ec);
        if (ec) {
            finish(make_result(Verdict::unknown,
                               fmt::format("host \"{}\": no ICMP socket (ping needs root or "
                                           "CAP_NET_RAW): {}",
                                           host_, ec.message())));
            return;
        }
        request_ = {v6_ ? echo_request_v6 : echo_request_v4,
                    0,
                    0,
                    0,
                    static_cast<std::uint8_t>(id_ >> 8),
                    static_cast<std::uint8_t>(id_ & 0xff),
                    static_cast<std::uint8_t>(sequence_ >> 8),
                    static_cast<std::uint8_t>(sequence_ & 0xff),
                    'v',
                    'm',
                    'h',
                    'a',
                    'p',
                    'i',
                    'n',
                    'g'};
        if (!v6_) {  // the kernel computes ICMPv6 checksums itself
            const std::uint16_t sum = internet_checksum(request_.data(), request_.size());
            request_[2] = static_cast<std::uint8_t>(sum >> 8);
            request_[3] = static_cast<std::uint8_t>(sum & 0xff);
        }
        socket_.async_send_to(
            asio::buffer(request_), to,
            [self = shared_from_this()](boost::system::error_code sec, std::size_t) {
                if (!self->done_) return;
                if (sec) {
                    self->finish(make_result(Verdict::failed,
                                             fmt::format("host \"{}\": ping could not be sent: {}",
                                                         self->host_, sec.message())));
                    return;
                }
                self->receive();
            });
    }

    // A raw socket sees every ICMP message of the node: wait for our identifier and sequence.
    void receive() {
        socket_.async_receive(
            asio::buffer(reply_),
            [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                if (!self->done_) return;
                if (ec) {
                    self->finish(make_result(
                        Verdict::failed,
                        fmt::format("host \"{}\": ping failed: {}", self->host_, ec.message())));
                    return;
                }
                if (self->is_our_reply(n)) {
                    self->finish(make_result(Verdict::healthy,
                                             fmt::format("host \"{}\" answers ping", self->host_)));
                    return;
                }
                self->receive();
            });
    }

    bool is_our_reply(std::size_t n) const {
        std::size_t at = 0;
        if (!v6_) {  // IPv4 raw sockets deliver the IP header too
            if (n < 20) return false;
            at = static_cast<std::size_t>(reply_[0] & 0x0f) * 4;
        }
        if (n < at + 8) return false;
        const std::uint8_t* m = reply_.data() + at;
        return m[0] == (v6_ ? echo_reply_v6 : echo_reply_v4) && m[1] == 0 &&
               (m[4] << 8 | m[5]) == id_ && (m[6] << 8 | m[7]) == sequence_;
    }

    void finish(CheckResult result) {
        if (!done_) return;
        Probe::Done done = std::move(done_);
        done_ = nullptr;
        close();
        done(std::move(result));
    }

    void close() {
        deadline_.cancel();
        resolver_.cancel();
        boost::system::error_code ignored;
        socket_.close(ignored);
    }

    std::string host_;
    std::chrono::milliseconds timeout_;
    std::uint16_t id_;
    std::uint16_t sequence_;
    Probe::Done done_;
    icmp::resolver resolver_;
    icmp::socket socket_;
    asio::steady_timer deadline_;
    bool v6_ = false;
    std::array<std::uint8_t, 16> request_{};
    std::array<std::uint8_t, 1500> reply_{};
};

class PingProbe : public Probe {
  public:
    PingProbe(asio::any_io_executor executor, std::string host, std::chrono::milliseconds timeout)
        : executor_(std::move(executor)),
          host_(std::move(host)),
          timeout_(timeout),
          id_(static_cast<std::uint16_t>(std::random_device{}())) {}
    ~PingProbe() override { PingProbe::cancel(); }

    void run(Done done) override {
        auto attempt = std::make_shared<Attempt>(executor_, host_, timeout_, id_, ++sequence_,
                                                 std::move(done));
        current_ = attempt;
        attempt->start();
    }

    void cancel() override {
        if (auto a = current_.lock()) a->cancel();
        current_.reset();
    }

  private:
    asio::any_io_executor executor_;
    std::string host_;
    std::chrono::milliseconds timeout_;
    std::uint16_t id_;
    std::uint16_t sequence_ = 0;
    std::weak_ptr<Attempt> current_;
};

}  // namespace

std::unique_ptr<Probe> make_ping_probe(asio::any_io_executor executor, std::string host,
                                       std::chrono::milliseconds timeout) {
    return std::make_unique<PingProbe>(std::move(executor), std::move(host), timeout);
}

}  // namespace vmha::checkers::detail
