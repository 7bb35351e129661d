// TLS for the control channel: context creation with startup checks, the peer identity check,
// handshake error text, and heartbeat key export.
#pragma once

#include <memory>
#include <string>

#include <openssl/ssl.h>

#include <vmha/config/config.h>
#include <vmha/error.h>

#include "asio.h"
#include "heartbeat_packet.h"

namespace vmha::peer::detail {

// TLS 1.3 only; both sides present a certificate and require the peer's, verified against the
// cluster CA. Checks that every file is readable, the key matches the certificate, and the
// certificate is signed by the CA and names `node_name` (CN or SAN DNS).
Result<std::shared_ptr<asio::ssl::context>> make_tls_context(const config::Tls& tls, const std::string& node_name);

// The node names a certificate carries (SAN DNS names, then the CN), for messages.
std::string certificate_names(X509* cert);

// OK when the peer's certificate names `expected_node`; else a peer_mismatch sentence.
Status check_peer_identity(SSL* ssl, const std::string& expected_node, const std::string& where);

// A failed handshake explained: OpenSSL's verify result when there is one.
std::string describe_handshake_failure(const boost::system::error_code& ec, SSL* ssl);

// The heartbeat key and session id for packets sent by `sender` for `module`, exported from
// the TLS session (RFC 8446 exporter, label "EXPORTER-vmha-heartbeat"). Both ends compute the
// same value for each direction.
HeartbeatKey export_heartbeat_key(SSL* ssl, const std::string& module, const std::string& sender);

}  // namespace vmha::peer::detail
