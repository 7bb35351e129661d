// Startup checks of the node's TLS files: every mistake is a clear error naming the file.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include <vmha/peer/peer.h>

#include "peer_test_util.h"

namespace vmha::peer {
namespace {

using test::cert_dir;
using test::node_config;

Error create_error(const config::Node& node) {
    boost::asio::io_context io;
    auto hub = PeerHub::create(io.get_executor(), node);
    EXPECT_FALSE(hub) << "the hub was created";
    return hub ? Error(errc::internal, "created") : hub.error();
}

TEST(PeerTls, ValidFilesCreateAHub) {
    boost::asio::io_context io;
    auto hub = PeerHub::create(io.get_executor(), node_config("hv1", cert_dir()));
    EXPECT_TRUE(hub) << hub.error().message;
}

TEST(PeerTls, MissingTlsSectionIsAnError) {
    config::Node node;
    node.name = "hv1";
    const Error e = create_error(node);
    EXPECT_TRUE(e.is(errc::invalid_config));
    EXPECT_NE(e.message.find("no \"tls\" section"), std::string::npos) << e.message;
}

TEST(PeerTls, MissingFileIsNamed) {
    auto node = node_config("hv1", cert_dir());
    node.tls->key = (cert_dir() / "absent.key").string();
    const Error e = create_error(node);
    EXPECT_TRUE(e.is(errc::unreadable)) << e.message;
    EXPECT_NE(e.message.find(node.tls->key), std::string::npos) << e.message;
}

TEST(PeerTls, KeyNotMatchingTheCertificateIsNamed) {
    auto node = node_config("hv1", cert_dir());
    node.tls->key = (cert_dir() / "hv2.key").string();
    const Error e = create_error(node);
    EXPECT_NE(e.message.find("does not match certificate"), std::string::npos) << e.message;
    EXPECT_NE(e.message.find("hv2.key"), std::string::npos) << e.message;
}

TEST(PeerTls, CertificateFromAnotherCaIsAnError) {
    auto node = node_config("hv2", cert_dir() / "other");
    node.tls->ca = (cert_dir() / "ca.pem").string();
    const Error e = create_error(node);
    EXPECT_NE(e.message.find("does not verify against the CA"), std::string::npos) << e.message;
}

TEST(PeerTls, CertificateForAnotherNodeIsAnError) {
    auto node = node_config("hv1", cert_dir());
    node.tls->cert = (cert_dir() / "hv3.pem").string();
    node.tls->key = (cert_dir() / "hv3.key").string();
    const Error e = create_error(node);
    EXPECT_NE(e.message.find("names \"hv3\", not this node \"hv1\""), std::string::npos) << e.message;
}

TEST(PeerTls, NonPemFileIsNamed) {
    auto node = node_config("hv1", cert_dir());
    node.tls->ca = VMHA_CERTS_SCRIPT;
    const Error e = create_error(node);
    EXPECT_NE(e.message.find("is not a PEM certificate"), std::string::npos) << e.message;
}

}  // namespace
}  // namespace vmha::peer
