// vmha-witness's server: the TLS listener, one coroutine per connection, the lease table and
// its state file. Everything runs on the one io_context thread given at creation, so the
// table needs no lock; a request is answered only after the state it depends on is on disk.
#pragma once

#include <memory>

#include <boost/asio/io_context.hpp>

#include <vmha/error.h>

#include "witness_config.h"

namespace vmha::witness {

struct ServerLimits {
    std::chrono::milliseconds handshake_timeout{5000};  // TLS handshake and HELLO
    std::chrono::milliseconds idle_timeout{300'000};    // a connection that sends nothing is closed
};

class Server {
  public:
    // Checks the TLS files (the certificate must name config.name), loads the state file
    // (every held lease counts as held for its full TTL from now), binds the listener.
    static Result<std::unique_ptr<Server>> create(boost::asio::io_context& io, WitnessConfig config,
                                                  ServerLimits limits = {});
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    void start();  // accepts connections
    void stop();   // stops accepting and closes every connection

    struct State;

  private:
    explicit Server(std::shared_ptr<State> state);
    std::shared_ptr<State> state_;
};

}  // namespace vmha::witness
