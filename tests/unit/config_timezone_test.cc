// Time zones read from TZif files: offsets checked against glibc's own reading of the same
// files over a century, DST gaps and overlaps resolved, POSIX rules, and bad input.
#include <ctime>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include <vmha/config/timezone.h>

using namespace vmha::config;
using std::chrono::seconds;

namespace {

SysSeconds utc(int y, int mo, int d, int h, int mi, int s = 0) {
    return SysSeconds{CivilTime{y, mo, d, h, mi, s}.local().time_since_epoch()};
}

LocalSeconds wall(int y, int mo, int d, int h, int mi, int s = 0) {
    return CivilTime{y, mo, d, h, mi, s}.local();
}

TimeZone zone(const char* name) {
    auto z = TimeZone::load(name);
    EXPECT_TRUE(z) << name << ": " << (z ? "" : z.error().message);
    return z ? *z : TimeZone::utc();
}

// glibc's offset for `t` in zone `name` (TZ set for this call only; the test is single-threaded).
long glibc_offset(const char* name, std::time_t t, std::string* abbreviation) {
    ::setenv("TZ", (std::string(":") + name).c_str(), 1);
    ::tzset();
    std::tm tm{};
    ::localtime_r(&t, &tm);
    *abbreviation = tm.tm_zone ? tm.tm_zone : "";
    return tm.tm_gmtoff;
}

}  // namespace

TEST(TimeZone, OffsetsAgreeWithGlibcOverACentury) {
    // Past transitions from the table, future ones (after 2037) from the footer rule; zones
    // with negative DST (Dublin), transitions at -1:00 (Nuuk), 30-minute DST (Lord Howe),
    // 45-minute offsets (Chatham), southern hemisphere, and no DST at all.
    const char* zones[] = {"Europe/Paris",      "America/New_York", "Australia/Lord_Howe",
                           "Pacific/Chatham",   "America/Nuuk",     "Europe/Dublin",
                           "America/Sao_Paulo", "Asia/Kolkata",     "Africa/Casablanca",
                           "America/Santiago",  "UTC"};
    const char* saved = std::getenv("TZ");
    const std::string restore = saved ? saved : "";
    for (const char* name : zones) {
        const TimeZone z = zone(name);
        int checked = 0;
        for (std::int64_t t = utc(1975, 1, 1, 0, 0).time_since_epoch().count();
             t < utc(2075, 1, 1, 0, 0).time_since_epoch().count(); t += 6 * 3600 + 1337) {
            std::string abbreviation;
            const long expected = glibc_offset(name, static_cast<std::time_t>(t), &abbreviation);
            const auto got = z.offset_at(SysSeconds{seconds{t}});
            ASSERT_EQ(got.utc_offset, expected) << name << " at " << t;
            ASSERT_EQ(got.abbreviation, abbreviation) << name << " at " << t;
            // Every instant is one of the instants its own wall-clock time resolves to.
            const auto r = z.resolve(z.to_local(SysSeconds{seconds{t}}));
            ASSERT_NE(r.kind, TimeZone::Resolved::Kind::gap) << name << " at " << t;
            ASSERT_TRUE(r.first.time_since_epoch().count() == t || r.second.time_since_epoch().count() == t)
                << name << " at " << t;
            ++checked;
        }
        EXPECT_GT(checked, 100000);
    }
    if (saved) {
        ::setenv("TZ", restore.c_str(), 1);
    } else {
        ::unsetenv("TZ");
    }
    ::tzset();
}

TEST(TimeZone, SpringForwardGapResolvesToTheJump) {
    const TimeZone paris = zone("Europe/Paris");
    // 2026-03-29: 02:00 CET becomes 03:00 CEST at 01:00 UTC; 02:30 does not exist.
    auto r = paris.resolve(wall(2026, 3, 29, 2, 30));
    EXPECT_EQ(r.kind, TimeZone::Resolved::Kind::gap);
    EXPECT_EQ(r.first, utc(2026, 3, 29, 1, 0));
    EXPECT_EQ(paris.format(r.first), "2026-03-29 03:00 CEST");
    // Just outside the gap, one instant each.
    r = paris.resolve(wall(2026, 3, 29, 1, 59));
    EXPECT_EQ(r.kind, TimeZone::Resolved::Kind::unique);
    EXPECT_EQ(r.first, utc(2026, 3, 29, 0, 59));
    r = paris.resolve(wall(2026, 3, 29, 3, 0));
    EXPECT_EQ(r.kind, TimeZone::Resolved::Kind::unique);
    EXPECT_EQ(r.first, utc(2026, 3, 29, 1, 0));
    // The same night in 2049, from the footer rule (last Sunday of March: the 28th).
    r = paris.resolve(wall(2049, 3, 28, 2, 15));
    EXPECT_EQ(r.kind, TimeZone::Resolved::Kind::gap);
    EXPECT_EQ(r.first, utc(2049, 3, 28, 1, 0));
}

TEST(TimeZone, FallBackOverlapHasTwoInstants) {
    const TimeZone paris = zone("Europe/Paris");
    auto r = paris.resolve(wall(2026, 10, 25, 2, 30));
    EXPECT_EQ(r.kind, TimeZone::Resolved::Kind::overlap);
    EXPECT_EQ(r.first, utc(2026, 10, 25, 0, 30));
    EXPECT_EQ(r.second, utc(2026, 10, 25, 1, 30));
    EXPECT_EQ(paris.format(r.first), "2026-10-25 02:30 CEST");
    EXPECT_EQ(paris.format(r.second), "2026-10-25 02:30 CET");
    // Lord Howe falls back by 30 minutes: 01:45 happens twice, 02:00 once.
    const TimeZone lh = zone("Australia/Lord_Howe");
    r = lh.resolve(wall(2027, 4, 4, 1, 45));
    EXPECT_EQ(r.kind, TimeZone::Resolved::Kind::overlap);
    EXPECT_EQ(r.second - r.first, seconds(1800));
    EXPECT_EQ(lh.resolve(wall(2027, 4, 4, 2, 0)).kind, TimeZone::Resolved::Kind::unique);
}

TEST(TimeZone, PosixRules) {
    auto ny = TimeZone::from_rule("test", "EST5EDT,M3.2.0,M11.1.0");
    ASSERT_TRUE(ny);
    EXPECT_EQ(ny->offset_at(utc(2030, 1, 10, 12, 0)).utc_offset, -5 * 3600);
    EXPECT_EQ(ny->offset_at(utc(2030, 7, 10, 12, 0)).utc_offset, -4 * 3600);
    // Second Sunday of March 2030 is the 10th: 02:00 EST = 07:00 UTC.
    EXPECT_EQ(ny->offset_at(utc(2030, 3, 10, 6, 59, 59)).abbreviation, "EST");
    EXPECT_EQ(ny->offset_at(utc(2030, 3, 10, 7, 0)).abbreviation, "EDT");
    // Julian days: J60 is March 1 in any year; 59 (zero-based) is Feb 29 in a leap year.
    auto j = TimeZone::from_rule("test", "<+00>0<+01>-1,J60/0,59/0");
    ASSERT_TRUE(j);
    EXPECT_EQ(j->offset_at(utc(2028, 2, 29, 12, 0)).utc_offset, 0) << "2028: DST ends Feb 29";
    EXPECT_EQ(j->offset_at(utc(2028, 3, 1, 0, 0)).utc_offset, 3600) << "and starts Mar 1";
    // A zone without DST, and bad rules.
    EXPECT_EQ(TimeZone::from_rule("t", "<-03>3")->offset_at(utc(2040, 6, 1, 0, 0)).utc_offset, -3 * 3600);
    for (const char* bad : {"", "E5", "EST", "EST5EDT,M13.1.0,M11.1.0", "EST5EDT,M3.2.0",
                            "EST5EDT,M3.2.0,M11.1.0x", "<+03-3", "EST5EDT,M3.0.0,M11.1.0"}) {
        auto r = TimeZone::from_rule("t", bad);
        EXPECT_FALSE(r) << bad;
        if (!r) { EXPECT_NE(r.error().message.find("time zone rule"), std::string::npos); }
    }
}

TEST(TimeZone, LoadErrors) {
    EXPECT_EQ(TimeZone::load("Mars/Olympus").error().message,
              "time zone \"Mars/Olympus\" is unknown (not in /usr/share/zoneinfo)");
    EXPECT_TRUE(TimeZone::load("zone.tab").error().is(vmha::errc::not_found));
    EXPECT_TRUE(TimeZone::load("Europe").error().is(vmha::errc::not_found)) << "a directory";
    EXPECT_TRUE(TimeZone::load("../../etc/passwd").error().is(vmha::errc::invalid_argument));
    EXPECT_TRUE(TimeZone::load("/etc/localtime").error().is(vmha::errc::invalid_argument));
    // A TZif file cut short is reported as such, not read past its end.
    const auto dir = std::filesystem::temp_directory_path() / ("vmha-tz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::ifstream in("/usr/share/zoneinfo/Europe/Paris", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (std::size_t cut : {std::size_t{44}, std::size_t{100}, bytes.size() / 2, bytes.size() - 20}) {
        std::ofstream(dir / "Cut", std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(cut));
        auto z = TimeZone::load("Cut", dir);
        EXPECT_FALSE(z) << cut;
        if (!z) { EXPECT_TRUE(z.error().is(vmha::errc::unreadable)) << cut << ": " << z.error().message; }
    }
    std::filesystem::remove_all(dir);
}

TEST(CivilTime, Parse) {
    EXPECT_EQ(parse_civil_time("2026-12-01 02:00")->to_string(), "2026-12-01 02:00");
    EXPECT_EQ(parse_civil_time("2026-12-01T02:00:30")->to_string(), "2026-12-01 02:00:30");
    EXPECT_EQ(parse_civil_time("2028-02-29 00:00")->day, 29);
    for (const char* bad : {"2027-02-29 00:00", "2026-12-01 24:00", "2026-13-01 02:00", "2026-12-01",
                            "2026-12-01 2:00", "2026/12/01 02:00", "2026-12-01 02:00:60", "+2026-12-1 02:00"}) {
        auto r = parse_civil_time(bad);
        EXPECT_FALSE(r) << bad;
    }
    EXPECT_EQ(parse_civil_time("2027-02-29 00:00").error().message,
              "\"2027-02-29 00:00\" is not a time \"YYYY-MM-DD HH:MM[:SS]\": no such date");
}
