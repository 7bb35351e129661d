// Durations, sizes, rates, addresses and networks as configuration files spell them.
#include <gtest/gtest.h>

#include <vmha/config/address.h>
#include <vmha/config/units.h>

using namespace vmha::config;
using namespace std::chrono_literals;

TEST(Duration, ParsesEveryUnitAndSums) {
    EXPECT_EQ(*parse_duration("500ms"), 500ms);
    EXPECT_EQ(*parse_duration("30s"), 30s);
    EXPECT_EQ(*parse_duration("10m"), 10min);
    EXPECT_EQ(*parse_duration("2h"), 2h);
    EXPECT_EQ(*parse_duration("1d"), 24h);
    EXPECT_EQ(*parse_duration("1m30s"), 90s);
    EXPECT_EQ(*parse_duration("1.5s"), 1500ms);
}

TEST(Duration, RefusesABareNumberAndNamesTheFix) {
    auto r = parse_duration("30");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message,
              "duration \"30\" has no unit; write it with one of ms, s, m, h, d, e.g. \"30s\"");
    EXPECT_TRUE(r.error().is(vmha::errc::invalid_argument));
}

TEST(Duration, RefusesUnknownUnitsAndGarbage) {
    EXPECT_EQ(parse_duration("5sec").error().message,
              "duration \"5sec\" has an unknown unit \"sec\"; use ms, s, m, h or d");
    EXPECT_FALSE(parse_duration("fast"));
    EXPECT_FALSE(parse_duration(""));
    EXPECT_FALSE(parse_duration("-5s"));
}

TEST(Duration, FormatsCompactly) {
    EXPECT_EQ(format_duration(90s), "1m30s");
    EXPECT_EQ(format_duration(500ms), "500ms");
    EXPECT_EQ(format_duration(0ms), "0s");
    EXPECT_EQ(format_duration(24h), "1d");
}

TEST(Size, BinaryAndDecimalUnits) {
    EXPECT_EQ(*parse_size("4096"), 4096u);
    EXPECT_EQ(*parse_size("4KiB"), 4096u);
    EXPECT_EQ(*parse_size("4K"), 4096u);
    EXPECT_EQ(*parse_size("1MiB"), 1u << 20);
    EXPECT_EQ(*parse_size("1GiB"), 1u << 30);
    EXPECT_EQ(*parse_size("2TiB"), 2ull << 40);
    EXPECT_EQ(*parse_size("1MB"), 1'000'000u);
    EXPECT_EQ(*parse_size("1.5KiB"), 1536u);
    EXPECT_EQ(parse_size("4Kb").error().message,
              "size \"4Kb\" has an unknown unit \"Kb\"; use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)");
    EXPECT_EQ(parse_size("0.3B").error().message, "size \"0.3B\" is not a whole number of bytes");
    EXPECT_FALSE(parse_size("lots"));
}

TEST(Size, Formats) {
    EXPECT_EQ(format_size(512), "512 B");
    EXPECT_EQ(format_size(4096), "4 KiB");
    EXPECT_EQ(format_size(3u << 29), "1.5 GiB");
}

TEST(Rate, NeedsPerSecond) {
    EXPECT_EQ(*parse_rate("200MiB/s"), 200ull << 20);
    EXPECT_EQ(*parse_rate("unlimited"), 0u);
    EXPECT_EQ(parse_rate("200MiB").error().message,
              "rate \"200MiB\" must be a size per second, e.g. \"200MiB/s\" (or \"unlimited\")");
}

TEST(Host, Ipv4Ipv6AndNames) {
    EXPECT_EQ(parse_host("10.0.0.1")->kind, Host::Kind::ipv4);
    EXPECT_EQ(parse_host("fd00::0001")->text, "fd00::1");
    EXPECT_EQ(parse_host("HV1.Example.com")->text, "hv1.example.com");
    EXPECT_EQ(parse_host("10.0.0.256").error().message, "\"10.0.0.256\" is not a valid IPv4 address");
    EXPECT_EQ(parse_host("bad_name").error().message,
              "\"bad_name\" is neither an IP address nor a valid host name");
    EXPECT_FALSE(parse_host("-a.example"));
    EXPECT_FALSE(parse_host("fd00:::1"));
}

TEST(HostPort, RequiresAPortInRange) {
    auto hp = parse_host_port("[fd00::1]:7950");
    ASSERT_TRUE(hp);
    EXPECT_EQ(hp->port, 7950);
    EXPECT_EQ(hp->to_string(), "[fd00::1]:7950");
    EXPECT_EQ(parse_host_port("witness:7950")->host.text, "witness");
    EXPECT_EQ(parse_host_port("witness").error().message, "\"witness\" has no port; write \"HOST:PORT\"");
    EXPECT_EQ(parse_host_port("w:0").error().message,
              "\"w:0\": port 0 is out of range; a port is 1 to 65535");
    EXPECT_FALSE(parse_host_port("fd00::1:80"));
    EXPECT_FALSE(parse_host_port("w:http"));
}

TEST(Cidr, ParsesAndRefusesHostBits) {
    auto c = parse_cidr("10.1.0.0/16");
    ASSERT_TRUE(c);
    EXPECT_EQ(c->to_string(), "10.1.0.0/16");
    EXPECT_TRUE(c->contains(*parse_host("10.1.200.3")));
    EXPECT_FALSE(c->contains(*parse_host("10.2.0.1")));
    EXPECT_FALSE(c->contains(*parse_host("fd00::1")));
    EXPECT_TRUE(parse_cidr("fd00::/64")->contains(*parse_host("fd00::5")));
    EXPECT_EQ(parse_cidr("10.0.0.1/24").error().message,
              "\"10.0.0.1/24\" has host bits set; did you mean \"10.0.0.0/24\"?");
    EXPECT_EQ(parse_cidr("10.0.0.0/33").error().message,
              "\"10.0.0.0/33\": prefix length \"33\" must be 0 to 32");
    EXPECT_EQ(parse_cidr("10.0.0.0").error().message,
              "\"10.0.0.0\" is not a network in CIDR form, e.g. \"10.0.0.0/24\"");
    EXPECT_TRUE(parse_cidr("0.0.0.0/0"));
}
