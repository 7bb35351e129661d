// Cron schedules for scheduled failback and swaps.
//
// Standard five fields (minute hour day-of-month month day-of-week) with '*', lists ("1,15"),
// ranges ("1-5"), steps ("*/15", "8-18/2"), month names (jan..dec) and day names (sun..sat,
// 0 and 7 both Sunday), plus the shorthands @yearly/@annually, @monthly, @weekly, @daily/
// @midnight and @hourly. As in Vixie cron, when both day-of-month and day-of-week are
// restricted, a day matches if either does.
//
// Times here are civil (wall-clock) times in the module's time zone; converting to and from
// instants (and DST gaps/overlaps) is the scheduler's job.
#pragma once

#include <bitset>
#include <optional>
#include <string>
#include <string_view>

#include <vmha/error.h>

namespace vmha::config {

struct CivilMinute {
    int year = 1970;
    int month = 1;   // 1..12
    int day = 1;     // 1..31
    int hour = 0;    // 0..23
    int minute = 0;  // 0..59

    auto operator<=>(const CivilMinute&) const = default;
    std::string to_string() const;  // "2026-12-01 02:00"
};

// 0 = Sunday .. 6 = Saturday, for a proleptic Gregorian date.
int weekday(int year, int month, int day);

class CronSchedule {
public:
    static Result<CronSchedule> parse(std::string_view text);

    bool matches(const CivilMinute& t) const;
    // The first minute strictly after `t` that matches; nullopt if none within 8 years
    // (e.g. "0 0 30 2 *", which never fires).
    std::optional<CivilMinute> next_after(const CivilMinute& t) const;

    const std::string& text() const { return text_; }

private:
    std::string text_;
    std::bitset<60> minutes_;
    std::bitset<24> hours_;
    std::bitset<32> days_;    // 1..31
    std::bitset<13> months_;  // 1..12
    std::bitset<7> weekdays_;  // 0..6, Sunday = 0
    bool day_restricted_ = false;
    bool weekday_restricted_ = false;

    bool day_matches(int year, int month, int day) const;
};

}  // namespace vmha::config
