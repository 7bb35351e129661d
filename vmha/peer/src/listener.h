// A control-channel listener on one local address:port, shared by every module whose node
// entry names it. Owned by the hub's executor. It runs the server side of the TLS handshake,
// reads the first frame (a HELLO naming the module) and hands the connection to that module.
#pragma once

#include <memory>
#include <string>

#include "asio.h"
#include "hub_state.h"

namespace vmha::peer::detail {

class Listener : public std::enable_shared_from_this<Listener> {
public:
    Listener(std::weak_ptr<PeerHub::State> hub, asio::ip::tcp::acceptor acceptor, std::string where);
    void start();
    void stop();

private:
    asio::awaitable<void> accept_loop();
    asio::awaitable<void> admit(asio::ip::tcp::socket socket);

    std::weak_ptr<PeerHub::State> hub_;
    asio::ip::tcp::acceptor acceptor_;
    std::string where_;
    bool stopped_ = false;
};

}  // namespace vmha::peer::detail
