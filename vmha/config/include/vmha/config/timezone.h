// Time zones from the system's compiled tz database (TZif files, RFC 8536, in
// /usr/share/zoneinfo), for schedules written in a module's wall-clock time.
//
// libstdc++ 12 has the C++20 calendar but not its time-zone database, so this reads the TZif
// file itself: the transitions it lists, and after the last one the POSIX TZ rule of its
// footer ("CET-1CEST,M3.5.0,M10.5.0/3"), so that any year resolves.
//
// Wall-clock times are `LocalSeconds` (seconds since 1970-01-01 00:00 on the zone's clock).
// Turning one into an instant has three outcomes: one instant; none, when the clocks jump
// over it (a DST gap: 02:30 on the spring-forward night); or two, when the clocks pass it
// twice (a DST overlap: 02:30 on the fall-back night).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <vmha/config/cron.h>
#include <vmha/error.h>

namespace vmha::config {

using SysSeconds = std::chrono::sys_seconds;
using LocalSeconds = std::chrono::local_seconds;

struct CivilTime {
    int year = 1970;
    int month = 1;
    int day = 1;
    int hour = 0;
    int minute = 0;
    int second = 0;

    auto operator<=>(const CivilTime&) const = default;
    LocalSeconds local() const;
    static CivilTime from(LocalSeconds t);
    CivilMinute minute_of() const { return {year, month, day, hour, minute}; }
    static CivilTime from(const CivilMinute& m) { return {m.year, m.month, m.day, m.hour, m.minute, 0}; }
    std::string to_string() const;  // "2026-12-01 02:00:30" (":SS" only when not zero)
};

// "YYYY-MM-DD HH:MM[:SS]" (also with a 'T' between date and time); the date must exist.
Result<CivilTime> parse_civil_time(std::string_view text);

class TimeZone {
public:
    struct Offset {
        int utc_offset = 0;  // seconds east of UTC
        bool dst = false;
        std::string abbreviation;  // "CEST", "+1030"
        bool operator==(const Offset&) const = default;
    };

    // A wall-clock time resolved to instants (see the header comment).
    struct Resolved {
        enum class Kind : std::uint8_t { unique, gap, overlap };
        Kind kind = Kind::unique;
        SysSeconds first{};   // unique: the instant; overlap: the earlier one; gap: the instant
                              // the clocks jump over it (the first one after it, on the new clock)
        SysSeconds second{};  // overlap: the later one
    };

    // "UTC" is always there; other names are files under `root`. Errors: not_found (no such
    // zone), invalid_argument (a name that climbs out of `root`), corrupt (not a TZif file).
    static Result<TimeZone> load(std::string_view name,
                                 const std::filesystem::path& root = "/usr/share/zoneinfo");
    static TimeZone utc();
    // A zone from a POSIX TZ rule alone, e.g. "EST5EDT,M3.2.0,M11.1.0".
    static Result<TimeZone> from_rule(std::string_view name, std::string_view rule);

    const std::string& name() const { return name_; }
    Offset offset_at(SysSeconds t) const;
    LocalSeconds to_local(SysSeconds t) const { return LocalSeconds{t.time_since_epoch()} + std::chrono::seconds(offset_at(t).utc_offset); }
    Resolved resolve(LocalSeconds t) const;
    // "2026-12-01 02:00 CET" (seconds shown when not zero).
    std::string format(SysSeconds t) const;

    struct Rule;  // a POSIX TZ rule (the footer)

private:
    struct Transition {
        std::int64_t at;  // UTC seconds
        std::size_t type;
    };
    std::string name_;
    std::vector<Offset> types_;
    std::vector<Transition> transitions_;
    std::shared_ptr<const Rule> rule_;  // after the last transition (or always, if none)
};

}  // namespace vmha::config
