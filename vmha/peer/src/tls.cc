#include "tls.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

namespace vmha::peer::detail {

namespace {

Status readable(const std::string& what, const std::string& path) {
    if (path.empty()) return Error(errc::invalid_config, fmt::format("the node file sets no TLS {}", what));
    std::ifstream in(path);
    if (!in) {
        const int e = errno;
        return Error(errc::unreadable,
                     fmt::format("TLS {} \"{}\" cannot be read: {}", what, path, std::strerror(e)));
    }
    return {};
}

std::string openssl_errors() {
    std::string out;
    while (const unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty()) out += "; ";
        out += buf;
    }
    return out.empty() ? "unknown OpenSSL error" : out;
}

bool names_node(X509* cert, const std::string& node) {
    return X509_check_host(cert, node.data(), node.size(),
                           X509_CHECK_FLAG_ALWAYS_CHECK_SUBJECT | X509_CHECK_FLAG_NO_WILDCARDS, nullptr) == 1;
}

}  // namespace

std::string certificate_names(X509* cert) {
    std::string out;
    auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
    if (names != nullptr) {
        for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
            const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
            if (name->type != GEN_DNS) continue;
            const auto* s = name->d.dNSName;
            out += fmt::format("{}\"{}\"", out.empty() ? "" : ", ",
                               std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                           static_cast<std::size_t>(ASN1_STRING_length(s))));
        }
        GENERAL_NAMES_free(names);
    }
    char cn[256] = {};
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) > 0) {
        const std::string quoted = fmt::format("\"{}\"", cn);
        if (out.find(quoted) == std::string::npos) out += (out.empty() ? "" : ", ") + quoted;
    }
    return out.empty() ? "no name" : out;
}

Result<std::shared_ptr<asio::ssl::context>> make_tls_context(const config::Tls& tls, const std::string& node_name) {
    for (const auto& [what, path] : {std::pair{"CA", tls.ca}, {"certificate", tls.cert}, {"key", tls.key}}) {
        if (auto ok = readable(what, path); !ok) return ok.error();
    }
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls);
    SSL_CTX* native = ctx->native_handle();
    SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION);
    ERR_clear_error();
    boost::system::error_code ec;
    ctx->load_verify_file(tls.ca, ec);
    if (ec) {
        return Error(errc::invalid_config,
                     fmt::format("TLS CA \"{}\" is not a PEM certificate: {}", tls.ca, openssl_errors()));
    }
    ctx->use_certificate_chain_file(tls.cert, ec);
    if (ec) {
        return Error(errc::invalid_config,
                     fmt::format("TLS certificate \"{}\" is not a PEM certificate: {}", tls.cert, openssl_errors()));
    }
    std::unique_ptr<BIO, decltype(&BIO_free)> key_file(BIO_new_file(tls.key.c_str(), "r"), BIO_free);
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
        key_file ? PEM_read_bio_PrivateKey(key_file.get(), nullptr, nullptr, nullptr) : nullptr, EVP_PKEY_free);
    if (!key) {
        return Error(errc::invalid_config,
                     fmt::format("TLS key \"{}\" is not an unencrypted PEM private key: {}", tls.key, openssl_errors()));
    }
    X509* own = SSL_CTX_get0_certificate(native);
    if (X509_check_private_key(own, key.get()) != 1) {
        ERR_clear_error();
        return Error(errc::invalid_config, fmt::format("TLS key \"{}\" does not match certificate \"{}\"",
                                                       tls.key, tls.cert));
    }
    if (SSL_CTX_use_PrivateKey(native, key.get()) != 1) {
        return Error(errc::invalid_config,
                     fmt::format("TLS key \"{}\" cannot be used: {}", tls.key, openssl_errors()));
    }
    std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> verify(X509_STORE_CTX_new(), X509_STORE_CTX_free);
    if (!verify || X509_STORE_CTX_init(verify.get(), SSL_CTX_get_cert_store(native), own, nullptr) != 1) {
        internal_error("X509_STORE_CTX_init failed");
    }
    X509_STORE_CTX_set_purpose(verify.get(), X509_PURPOSE_SSL_CLIENT);
    if (X509_verify_cert(verify.get()) != 1) {
        const int err = X509_STORE_CTX_get_error(verify.get());
        ERR_clear_error();
        return Error(errc::invalid_config,
                     fmt::format("TLS certificate \"{}\" does not verify against the CA \"{}\": {}", tls.cert, tls.ca,
                                 X509_verify_cert_error_string(err)));
    }
    if (!names_node(own, node_name)) {
        return Error(errc::invalid_config,
                     fmt::format("TLS certificate \"{}\" names {}, not this node \"{}\" (CN or SAN DNS must be the "
                                 "node name)",
                                 tls.cert, certificate_names(own), node_name));
    }
    ctx->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
    return ctx;
}

Status check_peer_identity(SSL* ssl, const std::string& expected_node, const std::string& where) {
    X509* cert = SSL_get0_peer_certificate(ssl);
    if (cert == nullptr) {
        return Error(errc::peer_mismatch, fmt::format("the peer at {} presented no certificate", where));
    }
    if (!names_node(cert, expected_node)) {
        return Error(errc::peer_mismatch,
                     fmt::format("the peer at {} presented a certificate for {}, expected node \"{}\"", where,
                                 certificate_names(cert), expected_node));
    }
    return {};
}

std::string describe_handshake_failure(const boost::system::error_code& ec, SSL* ssl) {
    const long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) {
        return fmt::format("the peer's certificate does not verify against the cluster CA: {}",
                           X509_verify_cert_error_string(verify));
    }
    return ec.message();
}

HeartbeatKey export_heartbeat_key(SSL* ssl, const std::string& module, const std::string& sender) {
    static constexpr char label[] = "EXPORTER-vmha-heartbeat";
    const std::string context = module + '\0' + sender;
    std::array<std::uint8_t, 40> material{};
    if (SSL_export_keying_material(ssl, material.data(), material.size(), label, sizeof label - 1,
                                   reinterpret_cast<const unsigned char*>(context.data()), context.size(),
                                   1) != 1) {
        internal_error("SSL_export_keying_material failed on an established TLS session");
    }
    HeartbeatKey key;
    std::copy_n(material.begin(), key.key.size(), key.key.begin());
    for (std::size_t i = 32; i < 40; ++i) key.session = key.session << 8 | material[i];
    return key;
}

}  // namespace vmha::peer::detail
