// imagesyncd against real NBD clients: qemu-io, qemu-img, nbdinfo, nbdcopy, fio.
#include <random>

#include <nlohmann/json.hpp>

#include "daemon.h"

namespace imagesync_test {
namespace {

constexpr std::uint64_t kMiB = 1024 * 1024;

std::string pattern(std::size_t size, unsigned char byte) {
    return std::string(size, static_cast<char>(byte));
}

void put(std::string& image, std::size_t offset, const std::string& bytes) {
    image.replace(offset, bytes.size(), bytes);
}

#define EXPECT_TOOL_OK(argv, dir)                                          \
    do {                                                                   \
        const auto r_ = run_tool(argv, (dir).path());                      \
        EXPECT_EQ(r_.exit_code, 0) << describe(argv) << "\n" << r_.output; \
    } while (0)

TEST(ImagesyncdClients, QemuIoPatternsReadBackAndFileMatchesByteForByte) {
    IMAGESYNC_REQUIRE_TOOL("qemu-io");
    TempDir dir;
    const auto image = dir / "disk.img";
    make_zero_file(image, 4 * kMiB);
    Daemon daemon(dir, {"--image", "disk=" + image.string()});
    ASSERT_TRUE(daemon.wait_ready());

    const std::vector<std::string> argv{
        "qemu-io", "-f",
        "raw",     daemon.uri("disk"),
        "-c",      "write -P 0xab 0 64k",
        "-c",      "write -P 0xcd 1M 4k",
        "-c",      "write -P 0x11 4095k 1k",  // the last KiB of the export
        "-c",      "write -z 8k 8k",          // WRITE_ZEROES inside the 0xab range
        "-c",      "flush",
        "-c",      "read -P 0xab 0 8k",
        "-c",      "read -P 0 8k 8k",
        "-c",      "read -P 0xab 16k 48k",
        "-c",      "read -P 0xcd 1M 4k",
        "-c",      "read -P 0x11 4095k 1k"};
    const auto r = run_tool(argv, dir.path());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output.find("Pattern verification failed"), std::string::npos) << r.output;

    std::string expected(4 * kMiB, '\0');
    put(expected, 0, pattern(64 * 1024, 0xab));
    put(expected, 8 * 1024, pattern(8 * 1024, 0));
    put(expected, kMiB, pattern(4096, 0xcd));
    put(expected, 4095 * 1024, pattern(1024, 0x11));
    ASSERT_EQ(daemon.stop(), std::optional<int>(0));
    EXPECT_TRUE(read_file(image) == expected) << "the image file differs from the expected bytes";
}

TEST(ImagesyncdClients, NbdinfoJsonReportsSizeBlockSizesAndFlags) {
    IMAGESYNC_REQUIRE_TOOL("nbdinfo");
    TempDir dir;
    const auto image = dir / "disk.img";
    make_zero_file(image, 8 * kMiB);
    Daemon daemon(dir, {"--image", "disk=" + image.string()});
    ASSERT_TRUE(daemon.wait_ready());

    const std::vector<std::string> argv{"nbdinfo", "--json", daemon.uri("disk")};
    const auto r = run_tool(argv, dir.path());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto j = nlohmann::json::parse(r.output);
    ASSERT_EQ(j["exports"].size(), 1U);
    const auto& e = j["exports"][0];
    EXPECT_EQ(e["export-name"], "disk");
    EXPECT_EQ(e["export-size"], 8 * kMiB);
    EXPECT_EQ(e["block_size_minimum"], 512);
    EXPECT_EQ(e["block_size_preferred"], 4096);
    EXPECT_EQ(e["block_size_maximum"], 32 * kMiB);
    EXPECT_EQ(e["is_read_only"], false);
    EXPECT_EQ(e["can_flush"], true);
    EXPECT_EQ(e["can_fua"], true);
    EXPECT_EQ(e["can_trim"], true);
    EXPECT_EQ(e["can_zero"], true);
    EXPECT_EQ(e["can_fast_zero"], true);
    EXPECT_EQ(e["can_multi_conn"], true);
    EXPECT_EQ(j["structured"], true);
    EXPECT_EQ(e["contexts"], nlohmann::json::array({"base:allocation"}));
}

TEST(ImagesyncdClients, NbdinfoListsEveryExport) {
    IMAGESYNC_REQUIRE_TOOL("nbdinfo");
    TempDir dir;
    make_zero_file(dir / "a.img", kMiB);
    make_zero_file(dir / "b.img", 2 * kMiB);
    Daemon daemon(dir, {"--image", "alpha=" + (dir / "a.img").string(), "--image",
                        "beta=" + (dir / "b.img").string()});
    ASSERT_TRUE(daemon.wait_ready());

    const std::vector<std::string> argv{"nbdinfo", "--list", "--json",
                                        "nbd+unix:///?socket=" + daemon.socket().string()};
    const auto r = run_tool(argv, dir.path());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto j = nlohmann::json::parse(r.output);
    ASSERT_EQ(j["exports"].size(), 2U) << r.output;
    EXPECT_EQ(j["exports"][0]["export-name"], "alpha");
    EXPECT_EQ(j["exports"][0]["export-size"], kMiB);
    EXPECT_EQ(j["exports"][1]["export-name"], "beta");
    EXPECT_EQ(j["exports"][1]["export-size"], 2 * kMiB);
}

TEST(ImagesyncdClients, NbdcopyOf64MiBRandomDataInAndOutIsIdentical) {
    IMAGESYNC_REQUIRE_TOOL("nbdcopy");
    IMAGESYNC_REQUIRE_TOOL("cmp");
    TempDir dir;
    const auto source = dir / "random.bin";
    {
        std::mt19937_64 rng(20261126);
        std::string data(64 * kMiB, '\0');
        for (std::size_t i = 0; i + 8 <= data.size(); i += 8) {
            const std::uint64_t v = rng();
            std::memcpy(&data[i], &v, 8);
        }
        // A zero run, so sparse detection (block status, zero requests) is exercised too.
        std::fill(data.begin() + 8 * kMiB, data.begin() + 12 * kMiB, '\0');
        write_file(source, data);
    }
    const auto image = dir / "disk.img";
    {
        // Garbage where the zero run goes: copying must really zero it.
        make_zero_file(image, 64 * kMiB);
        std::fstream f(image, std::ios::binary | std::ios::in | std::ios::out);
        f.seekp(9 * kMiB);
        const std::string junk = pattern(kMiB, 0x77);
        f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
    }
    Daemon daemon(dir, {"--image", "disk=" + image.string()});
    ASSERT_TRUE(daemon.wait_ready());

    EXPECT_TOOL_OK(
        (std::vector<std::string>{"nbdcopy", "--flush", source.string(), daemon.uri("disk")}), dir);
    const auto copy = dir / "copy.bin";
    EXPECT_TOOL_OK((std::vector<std::string>{"nbdcopy", daemon.uri("disk"), copy.string()}), dir);
    EXPECT_TOOL_OK((std::vector<std::string>{"cmp", source.string(), copy.string()}), dir);
    ASSERT_EQ(daemon.stop(), std::optional<int>(0));
    EXPECT_TOOL_OK((std::vector<std::string>{"cmp", source.string(), image.string()}), dir);
}

TEST(ImagesyncdClients, FioRandomWritesVerifyWithCrc32c) {
    IMAGESYNC_REQUIRE_TOOL("fio");
    TempDir dir;
    const auto image = dir / "disk.img";
    make_zero_file(image, 32 * kMiB);
    Daemon daemon(dir, {"--image", "disk=" + image.string()});
    ASSERT_TRUE(daemon.wait_ready());

    const std::vector<std::string> argv{"fio",
                                        "--name=imagesync",
                                        "--ioengine=nbd",
                                        "--uri=" + daemon.uri("disk"),
                                        "--rw=randwrite",
                                        "--bs=4k",
                                        "--iodepth=32",
                                        "--size=32M",
                                        "--verify=crc32c",
                                        "--do_verify=1",
                                        "--verify_fatal=1",
                                        "--numjobs=1",
                                        "--verify_state_save=0"};
    const auto r = run_tool(argv, dir.path());
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output.find("verify: bad"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("err= 0"), std::string::npos) << r.output;
}

TEST(ImagesyncdClients, SparseQcow2GrowsAcrossItsWholeVirtualSizeAndChecksClean) {
    IMAGESYNC_REQUIRE_TOOL("qemu-img");
    IMAGESYNC_REQUIRE_TOOL("qemu-io");
    TempDir dir;
    const auto image = dir / "disk.qcow2";
    EXPECT_TOOL_OK((std::vector<std::string>{"qemu-img", "create", "-q", "-f", "qcow2",
                                             image.string(), "64M"}),
                   dir);
    const auto created_size = fs::file_size(image);
    ASSERT_LT(created_size, kMiB) << "qemu-img created a non-sparse qcow2";
    {
        Daemon daemon(dir, {"--growable", "--image", "vm=" + image.string()});
        ASSERT_TRUE(daemon.wait_ready());
        const std::vector<std::string> argv{"qemu-io", "-f",
                                            "qcow2",   daemon.uri("vm"),
                                            "-c",      "write -P 0x5a 0 64M",
                                            "-c",      "write -P 0x5b 32M 1M",
                                            "-c",      "flush",
                                            "-c",      "read -P 0x5a 0 32M",
                                            "-c",      "read -P 0x5b 32M 1M",
                                            "-c",      "read -P 0x5a 33M 31M"};
        const auto r = run_tool(argv, dir.path());
        ASSERT_EQ(r.exit_code, 0) << r.output;
        EXPECT_EQ(r.output.find("failed"), std::string::npos) << r.output;
        ASSERT_EQ(daemon.stop(), std::optional<int>(0));
    }
    EXPECT_GT(fs::file_size(image), 64 * kMiB) << "the qcow2 file did not grow";
    EXPECT_TOOL_OK((std::vector<std::string>{"qemu-img", "check", "-f", "qcow2", image.string()}),
                   dir);
    // The file itself, opened directly by QEMU, holds what was written through NBD.
    EXPECT_TOOL_OK((std::vector<std::string>{"qemu-io", "-r", "-f", "qcow2", image.string(), "-c",
                                             "read -P 0x5b 32M 1M", "-c", "read -P 0x5a 63M 1M"}),
                   dir);
}

TEST(ImagesyncdClients, ExplicitSizeReadsZeroesPastTheFileAndWritesExtendIt) {
    IMAGESYNC_REQUIRE_TOOL("qemu-io");
    TempDir dir;
    const auto image = dir / "disk.img";
    write_file(image, pattern(kMiB, 0x42));
    Daemon daemon(dir, {"--image", "disk=" + image.string() + ",size=8M"});
    ASSERT_TRUE(daemon.wait_ready());
    EXPECT_TOOL_OK((std::vector<std::string>{"qemu-io", "-f", "raw", daemon.uri("disk"), "-c",
                                             "read -P 0x42 0 1M", "-c", "read -P 0 1M 7M", "-c",
                                             "write -P 0x43 6M 64k", "-c", "read -P 0 1M 5M", "-c",
                                             "read -P 0x43 6M 64k"}),
                   dir);
    ASSERT_EQ(daemon.stop(), std::optional<int>(0));
    EXPECT_EQ(fs::file_size(image), 6 * kMiB + 64 * 1024);
}

TEST(ImagesyncdClients, SecondaryRoleRefusesWritesAndServesReads) {
    IMAGESYNC_REQUIRE_TOOL("qemu-io");
    TempDir dir;
    const auto image = dir / "disk.img";
    const std::string content = pattern(2 * kMiB, 0x3c);
    write_file(image, content);
    Daemon daemon(dir, {"--role", "secondary", "--image", "disk=" + image.string()});
    ASSERT_TRUE(daemon.wait_ready());

    const std::vector<std::string> write{"qemu-io",          "-f", "raw",
                                         daemon.uri("disk"), "-c", "write -P 0xff 0 64k"};
    const auto w = run_tool(write, dir.path());
    EXPECT_NE(w.exit_code, 0) << "a write to a secondary succeeded:\n" << w.output;
    EXPECT_TOOL_OK((std::vector<std::string>{"qemu-io", "-r", "-f", "raw", daemon.uri("disk"), "-c",
                                             "read -P 0x3c 0 2M"}),
                   dir);
    ASSERT_EQ(daemon.stop(), std::optional<int>(0));
    EXPECT_TRUE(read_file(image) == content) << "the secondary's image changed";
}

TEST(ImagesyncdClients, SigtermExitsZeroAndRemovesTheSocket) {
    TempDir dir;
    const auto image = dir / "disk.img";
    make_zero_file(image, kMiB);
    Daemon daemon(dir, {"--image", "disk=" + image.string()});
    ASSERT_TRUE(daemon.wait_ready());
    EXPECT_EQ(daemon.stop(SIGTERM), std::optional<int>(0));
    EXPECT_FALSE(fs::exists(daemon.socket()));
}

TEST(ImagesyncdClients, SigintExitsZero) {
    TempDir dir;
    const auto image = dir / "disk.img";
    make_zero_file(image, kMiB);
    Daemon daemon(dir, {"--image", "disk=" + image.string()});
    ASSERT_TRUE(daemon.wait_ready());
    EXPECT_EQ(daemon.stop(SIGINT), std::optional<int>(0));
}

TEST(ImagesyncdClients, BadCommandLinesFailWithAClearMessage) {
    TempDir dir;
    make_zero_file(dir / "disk.img", kMiB);
    struct Case {
        std::vector<std::string> args;
        std::string message;
    };
    const std::vector<Case> cases{
        {{"--image", "disk=" + (dir / "missing.img").string()}, "cannot open image"},
        {{"--image", "disk=" + (dir / "disk.img").string() + ",size=4k"}, "is smaller than"},
        {{"--image", "disk=" + (dir / "disk.img").string() + ",size=1000"}, "multiple of 512"},
        {{"--image", "nameonly"}, "NAME=PATH"},
        {{"--image", "a=" + (dir / "disk.img").string(), "--image",
          "a=" + (dir / "disk.img").string()},
         "given twice"},
        {{"--image", "a=" + (dir / "disk.img").string(), "--image",
          "b=" + (dir / "disk.img").string()},
         "are the same file"},
        {{"--image", "a=" + (dir / "disk.img").string(), "--role", "tertiary"}, "tertiary"},
        {{"--image", "a=" + (dir / "disk.img").string(), "--early-writeback", "17M"},
         "--early-writeback: \"17M\" is over 16M"},
        {{"--image", "a=" + (dir / "disk.img").string(), "--inline-flush", "1Q"},
         "--inline-flush: size \"1Q\" has an unknown suffix"},
        {{"--image", "a=" + (dir / "disk.img").string(), "--chunk-size", "96K"},
         "--chunk-size: \"96K\" is not a power of two from 4K to 16M"},
        {{"--image", "a=" + (dir / "disk.img").string(), "--al-extent", "32K"},
         "--al-extent: \"32K\" is not a power of two from 64K to 1G"},
        {{"--image", "a=" + (dir / "disk.img").string(), "--chunk-size", "8M", "--al-extent", "4M"},
         "--al-extent: 4M is below --chunk-size 8M"},
        {{"--image", "a=" + (dir / "disk.img").string(), "--listen", "127.0.0.1:0",
          "--tcp-congestion", "no_such_cc"},
         "--tcp-congestion: TCP congestion control \"no_such_cc\" is not available on this "
         "kernel (available: "},
        {{"--image", "a=" + (dir / "disk.img").string(), "--listen", "127.0.0.1:0",
          "--tcp-congestion", "Cubic!"},
         "--tcp-congestion: TCP congestion control \"Cubic!\" is not a name"},
    };
    for (const Case& c : cases) {
        Daemon daemon(dir, c.args);
        ASSERT_GT(daemon.pid(), 0);
        std::optional<int> status = daemon.wait_exit();
        ASSERT_TRUE(status.has_value()) << describe(c.args);
        EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0) << describe(c.args);
        EXPECT_NE(daemon.log().find(c.message), std::string::npos) << describe(c.args) << "\n"
                                                                   << daemon.log();
        std::filesystem::remove(dir / "imagesyncd.log");
    }
}

}  // namespace
}  // namespace imagesync_test
