// What the hub shares with its listeners and module peers. Owned by the hub's executor.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <vmha/peer/peer.h>

#include "asio.h"

namespace vmha::peer::detail {
class ModulePeerImpl;
class Listener;
}  // namespace vmha::peer::detail

namespace vmha::peer {

struct PeerHub::State {
    asio::any_io_executor executor;
    config::Node node;
    HubOptions options;
    std::shared_ptr<asio::ssl::context> tls;
    // Attached modules by name: where an accepted connection's HELLO is dispatched.
    std::map<std::string, std::weak_ptr<detail::ModulePeerImpl>> modules;
    // One listener per "address:port".
    std::map<std::string, std::shared_ptr<detail::Listener>> listeners;
    bool stopped = false;
};

}  // namespace vmha::peer
