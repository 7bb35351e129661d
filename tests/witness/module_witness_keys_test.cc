// The module file's witness keys that the lease backends use: margin, name (vmha), prefix
// (etcd). (The other witness keys are tested with the rest of the module file in tests/unit.)
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <vmha/config/load.h>
#include <vmha/lease/from_config.h>

namespace {

using namespace vmha::config;

std::string module_with_witness(const std::string& witness) {
    return "module: m\n"
           "vm: {name: m, domain_xml: /etc/vmha/m.xml}\n"
           "disks: [{path: /srv/m.raw}]\n"
           "nodes: [{name: hv1, address: 10.0.0.1}, {name: hv2, address: 10.0.0.2}]\n"
           "replication: {port: 7801}\n"
           "heartbeat: {paths: [{port: 7802, addresses: {hv1: 10.0.0.1, hv2: 10.0.0.2}}]}\n"
           "witness: " +
           witness + "\n";
}

std::vector<std::string> errors(const std::string& witness, std::optional<Witness>* out = nullptr) {
    Findings findings;
    auto loaded = parse_file("m.yaml", module_with_witness(witness), findings);
    std::vector<std::string> result;
    for (const auto& f : findings.items) {
        if (f.severity == Severity::error) result.push_back(f.to_string());
    }
    if (out != nullptr && loaded.module) *out = loaded.module->witness;
    return result;
}

TEST(ModuleWitnessKeys, DefaultsAndValues) {
    std::optional<Witness> w;
    EXPECT_TRUE(errors("{endpoints: [\"10.0.0.3:7950\"]}", &w).empty());
    ASSERT_TRUE(w);
    EXPECT_EQ(w->margin, std::chrono::seconds(1));
    EXPECT_EQ(w->name, "");
    EXPECT_EQ(w->prefix, "/vmha/leases/");
    EXPECT_TRUE(errors("{endpoints: [\"10.0.0.3:7950\"], name: witness1, margin: 2s}", &w).empty());
    EXPECT_EQ(w->name, "witness1");
    EXPECT_EQ(w->margin, std::chrono::seconds(2));
    EXPECT_TRUE(
        errors("{type: etcd, endpoints: [\"10.0.0.3:2379\", \"10.0.0.4:2379\"], prefix: /ha/}", &w)
            .empty());
    EXPECT_EQ(w->prefix, "/ha/");
}

TEST(ModuleWitnessKeys, Refusals) {
    EXPECT_EQ(errors("{type: etcd, endpoints: [\"10.0.0.3:2379\"], name: w1}"),
              std::vector<std::string>{
                  "m.yaml:7:59: witness.name: \"name\" is the vmha witness's certificate name; "
                  "an etcd witness has none"});
    EXPECT_EQ(errors("{endpoints: [\"10.0.0.3:7950\"], prefix: /x/}"),
              std::vector<std::string>{
                  "m.yaml:7:49: witness.prefix: \"prefix\" is the etcd key prefix; a vmha "
                  "witness has none"});
    EXPECT_EQ(errors("{type: etcd, endpoints: [\"10.0.0.3:2379\"], prefix: x}"),
              std::vector<std::string>{
                  "m.yaml:7:61: witness.prefix: prefix \"x\" must start and end with '/'"});
    EXPECT_EQ(errors("{endpoints: [\"10.0.0.3:7950\"], lease: 10s, margin: 10s}"),
              std::vector<std::string>{
                  "m.yaml:7:61: witness.margin: margin 10s leaves no time of the 10s lease (it "
                  "must be below 99% of it)"});
}

TEST(ModuleWitnessKeys, BackendFromConfig) {
    std::optional<Witness> w;
    Findings findings;
    auto loaded = parse_file(
        "m.yaml", module_with_witness("{endpoints: [\"10.0.0.3:7950\"], margin: 2s}"), findings);
    ASSERT_TRUE(loaded.valid && loaded.module && loaded.module->witness);
    EXPECT_EQ(vmha::lease::key_of(*loaded.module), (vmha::lease::LeaseKey{"hv1+hv2", "m"}));
    EXPECT_EQ(vmha::lease::timing_of(*loaded.module->witness).margin, std::chrono::seconds(2));
    boost::asio::io_context io;
    Node node;
    node.name = "hv1";
    auto none = vmha::lease::make_backend(io.get_executor(), *loaded.module->witness, node);
    ASSERT_FALSE(none);
    EXPECT_TRUE(none.error().is(vmha::errc::invalid_config)) << none.error().message;
    node.tls = Tls{"/nonexistent/ca.pem", "/nonexistent/hv1.pem", "/nonexistent/hv1.key"};
    auto unreadable = vmha::lease::make_backend(io.get_executor(), *loaded.module->witness, node);
    ASSERT_FALSE(unreadable);
    EXPECT_NE(unreadable.error().message.find("/nonexistent/ca.pem"), std::string::npos)
        << unreadable.error().message;
    EXPECT_TRUE(errors("{type: etcd, endpoints: [\"127.0.0.1:2379\"]}", &w).empty());
    EXPECT_TRUE(vmha::lease::make_backend(io.get_executor(), *w, node));
}

}  // namespace
